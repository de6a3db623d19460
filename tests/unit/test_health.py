"""Invoker health decided from heartbeats alone: up, unhealthy, down; and `GET /invokers` in OpenWhisk's shape."""

from __future__ import annotations

from broker import codec
from broker.health import (
    DOWN,
    OFFLINE_AFTER_MS,
    UNHEALTHY,
    UP,
    ErrorWindow,
    Heartbeat,
    healthy_count,
    invoker_state,
    listing,
)

NOW = 1_700_000_000_000


def beat(id: str = "a", *, at: int = NOW, started: int = NOW - 60_000, **fields: object) -> Heartbeat:
    return Heartbeat(id=id, at=at, started=started, **fields)  # type: ignore[arg-type]


def test_a_fresh_heartbeat_is_up() -> None:
    assert invoker_state(beat(at=NOW - 500), NOW) == UP


def test_no_heartbeat_for_10_seconds_is_down() -> None:
    assert invoker_state(beat(at=NOW - OFFLINE_AFTER_MS), NOW) == UP
    assert invoker_state(beat(at=NOW - OFFLINE_AFTER_MS - 1), NOW) == DOWN


def test_a_stopping_invoker_is_down_at_once() -> None:
    assert invoker_state(beat(stopping=True), NOW) == DOWN


def test_more_than_3_system_errors_of_the_last_10_is_unhealthy() -> None:
    assert invoker_state(beat(system_errors=3), NOW) == UP
    assert invoker_state(beat(system_errors=4), NOW) == UNHEALTHY
    # Silence still wins: an invoker that stopped beating is down whatever it said last.
    assert invoker_state(beat(system_errors=9, at=NOW - 60_000), NOW) == DOWN


def test_error_window_counts_only_the_last_ten() -> None:
    window = ErrorWindow()
    for _ in range(5):
        window.record(True)
    assert window.errors == 5
    for _ in range(8):
        window.record(False)
    assert window.errors == 2


def test_old_errors_stop_counting_so_an_unhealthy_invoker_gets_another_chance() -> None:
    window = ErrorWindow(horizon_s=30)
    for at in (0.0, 1.0, 2.0, 3.0):
        window.record(True, now=at)
    assert window.count(now=10.0) == 4
    assert window.count(now=31.5) == 2  # the errors at 0 and 1 are older than 30 s
    assert window.count(now=40.0) == 0


def test_listing_numbers_invokers_oldest_first_as_openwhisk_names_them() -> None:
    beats = [
        beat("host-2", started=NOW - 1_000),
        beat("host-1", started=NOW - 9_000, at=NOW - 20_000),
        beat("host-3", started=NOW - 500, system_errors=5),
    ]
    assert listing(beats, NOW) == {
        "invoker0/0": "down",
        "invoker1/1": "up",
        "invoker2/2": "unhealthy",
    }
    # Unauthenticated: ranks only, never the ids (which carry host names and pids).
    assert not any("host" in name for name in listing(beats, NOW))
    assert healthy_count(beats, NOW) == 1
    assert listing([], NOW) == {}


def test_heartbeat_round_trips_and_old_readers_tolerate_missing_fields() -> None:
    full = beat(capacity_mb=2048, free_mb=1024, warm=3, in_flight=2, version="0.1.0")
    assert codec.decode(codec.encode(full), Heartbeat) == full
    assert codec.decode(b'{"id": "x"}', Heartbeat) == Heartbeat(id="x")
