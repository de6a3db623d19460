"""The supervisor's decisions: how many processes of each role, how long before a restart, and the settings
handed down to role processes."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import pytest

from broker.config import Settings
from broker.key_seal import new_secret
from squall.supervisor import (
    RESTART_FIRST_S,
    RESTART_MAX_S,
    describe_exit,
    restart_delay,
    role_counts,
)


@pytest.mark.parametrize(
    ("cores", "api", "brokers"),
    [(1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 2), (16, 16, 8)],
)
def test_api_workers_and_brokers_follow_the_cores(cores: int, api: int, brokers: int) -> None:
    counts = role_counts(Settings(), cores)
    assert counts == {"invoker": 1, "broker": brokers, "feeds": 1, "api": api}


def test_counts_set_by_the_operator_win_over_the_cores() -> None:
    settings = Settings(api_workers=3, brokers=2, invokers=0, feeds_workers=2)
    assert role_counts(settings, 64) == {"invoker": 0, "broker": 2, "feeds": 2, "api": 3}


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Settings(brokers=-1)


def test_restart_delay_doubles_up_to_its_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 10)]
    assert delays[0] == RESTART_FIRST_S
    assert delays[1] == 2 * RESTART_FIRST_S
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == RESTART_MAX_S
    assert restart_delay(0) == RESTART_FIRST_S


def test_exits_are_described_by_signal_name_or_status() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit status 1"


def test_settings_survive_the_trip_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        nats_url="nats://u:p@127.0.0.1:4222",
        api_port=40123,
        data_dir=tmp_path,
        drain_timeout_s=2.5,
        single_process=True,
        event_loop="asyncio",
        brokers=3,
        invocation_secret=new_secret(),
    )
    env = settings.to_env()
    assert env["SQUALL_SINGLE_PROCESS"] == "true"
    assert Settings.from_env(env) == settings
    assert Settings.from_env(Settings().to_env()) == Settings.from_env({})


def test_the_event_loop_is_checked() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        Settings(event_loop="tokio")
