"""The data dir's invocation secret (broker/key_seal.py): made once, readable by its owner alone, and used
wherever `SQUALL_INVOCATION_SECRET` is not set."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

import msgspec

from broker.config import Settings
from broker.key_seal import decode_secret, new_secret

FILE_NAME: Final = "invocation.secret"


def load_or_create(data_dir: Path) -> str:
    """The secret kept in `data_dir`, made (mode 0600) on first use. Processes starting together agree: the
    file appears whole or not at all (written aside, then linked into place, which fails if one is there)."""
    path = data_dir / FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".{FILE_NAME}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(new_secret() + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a copy restored with looser permissions is tightened
    secret = path.read_text().strip()
    decode_secret(secret)  # a damaged file is an error, not a silently different key
    return secret


def with_invocation_secret(settings: Settings) -> Settings:
    """The settings with their invocation secret: the one given, else the data dir's."""
    if settings.invocation_secret:
        return settings
    secret = load_or_create(settings.data_dir)
    return msgspec.structs.replace(settings, invocation_secret=secret)
