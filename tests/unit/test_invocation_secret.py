"""The data dir's invocation secret (squall/invocation_secret.py) and its setting: made once, 0600, kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import BadRequest
from broker.key_seal import decode_secret, new_secret
from squall.invocation_secret import FILE_NAME, load_or_create, with_invocation_secret


def test_the_secret_is_made_once_readable_by_its_owner_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create(data_dir)
    assert len(decode_secret(first)) == 32
    path = data_dir / FILE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create(data_dir) == first
    path.chmod(0o644)  # restored from a backup with looser permissions
    assert load_or_create(data_dir) == first and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in data_dir.iterdir()] == [FILE_NAME], "no draft left behind"


def test_a_damaged_secret_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("not a key\n")
    with pytest.raises(ValueError, match="invocation secret"):
        load_or_create(tmp_path)


def test_a_given_secret_wins_over_the_data_dirs(tmp_path: Path) -> None:
    given = new_secret()
    assert (
        with_invocation_secret(Settings(data_dir=tmp_path, invocation_secret=given)).invocation_secret
        == given
    )
    assert not (tmp_path / FILE_NAME).exists()
    made = with_invocation_secret(Settings(data_dir=tmp_path)).invocation_secret
    assert made == (tmp_path / FILE_NAME).read_text().strip()


def test_a_malformed_secret_setting_is_refused() -> None:
    with pytest.raises(BadRequest, match="invocation secret"):
        Settings.from_env({"SQUALL_INVOCATION_SECRET": "short"})
    assert Settings.from_env({"SQUALL_INVOCATION_SECRET": new_secret()}).invocation_secret
