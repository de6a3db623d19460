"""Settings: read from SQUALL_* variables in one place, explicit overrides win, bad values are 400s."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import BadRequest


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(data_dir=settings.data_dir)
    assert settings.nats_url == ""
    assert settings.stream_max_age_days == 7


def test_environment_is_parsed_into_typed_fields() -> None:
    settings = Settings.from_env(
        {
            "SQUALL_NATS_URL": "nats://127.0.0.1:4333",
            "SQUALL_API_PORT": "8080",
            "SQUALL_DRAIN_TIMEOUT_S": "1.5",
            "SQUALL_DATA_DIR": "/var/lib/squall",
            "UNRELATED": "x",
        }
    )
    assert settings.nats_url == "nats://127.0.0.1:4333"
    assert settings.api_port == 8080
    assert settings.drain_timeout_s == 1.5
    assert settings.data_dir == Path("/var/lib/squall")


def test_empty_variables_mean_default() -> None:
    assert Settings.from_env({"SQUALL_API_PORT": ""}).api_port == Settings().api_port


def test_overrides_win_and_none_overrides_are_ignored() -> None:
    env = {"SQUALL_API_PORT": "8080", "SQUALL_NATS_URL": "nats://env:4222"}
    settings = Settings.from_env(env, api_port=9090, nats_url=None)
    assert settings.api_port == 9090
    assert settings.nats_url == "nats://env:4222"


def test_data_dir_user_is_expanded() -> None:
    settings = Settings.from_env({"SQUALL_DATA_DIR": "~/squall-test"})
    assert "~" not in str(settings.data_dir)
    assert settings.data_dir == Path("~/squall-test").expanduser()


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SQUALL_API_PORT", "eighty"),
        ("SQUALL_STREAM_MAX_AGE_DAYS", "1.5x"),
        ("SQUALL_DRAIN_TIMEOUT_S", "soon"),
    ],
)
def test_bad_values_are_bad_requests(var: str, value: str) -> None:
    with pytest.raises(BadRequest, match="invalid setting"):
        Settings.from_env({var: value})


def test_path_overrides_from_the_cli_are_accepted(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "x")
    assert settings.data_dir == tmp_path / "x"


def test_namespace_throttles_default_to_openwhisk_values_and_read_the_environment() -> None:
    plain = Settings.from_env({})
    assert (plain.invocations_per_minute, plain.concurrent_invocations, plain.fires_per_minute) == (
        60,
        30,
        60,
    )
    settings = Settings.from_env(
        {
            "SQUALL_INVOCATIONS_PER_MINUTE": "600",
            "SQUALL_CONCURRENT_INVOCATIONS": "100",
            "SQUALL_FIRES_PER_MINUTE": "120",
        }
    )
    assert (settings.invocations_per_minute, settings.concurrent_invocations, settings.fires_per_minute) == (
        600,
        100,
        120,
    )


def test_the_nats_fsync_policy_is_checked_when_read() -> None:
    assert Settings.from_env({}).nats_sync == ""
    for value in ("always", "1s", "250ms", "2m"):
        assert Settings.from_env({"SQUALL_NATS_SYNC": value}).nats_sync == value
    with pytest.raises(BadRequest, match="nats_sync"):
        Settings.from_env({"SQUALL_NATS_SYNC": "often"})


def test_the_api_url_actions_get_is_built_from_host_and_port() -> None:
    assert Settings().api_url == "http://127.0.0.1:3233"
    assert Settings.from_env({"SQUALL_API_HOST": "10.0.0.5", "SQUALL_API_PORT": "8080"}).api_url == (
        "http://10.0.0.5:8080"
    )
