"""OpenWhisk's alarm firing rules, the alarm providers' checks, and the ownership of alarms among members."""

from __future__ import annotations

import pytest

from broker.errors import BadRequest, Forbidden, NotFound, Throttled, Unavailable
from feeds.alarms import AlarmProvider, payload_of
from feeds.fire_rules import (
    RETRY_ATTEMPTS,
    THROTTLED_MESSAGE,
    Disable,
    GiveUp,
    Retry,
    after_failure,
    http_status,
)
from feeds.membership import alive, owner_of

NOW = 1_800_000_000_000
FUTURE = NOW + 86_400_000


def test_a_client_error_disables_except_408_409_429() -> None:
    for status in (400, 403, 404, 413):
        decision = after_failure(status, "gone", 1, 0)
        assert decision == Disable(status=status, message="Trigger automatically disabled: gone")
    for status in (408, 409):
        assert isinstance(after_failure(status, "busy", 1, 0), Retry)


def test_429_backs_off_quadratically_and_ten_in_a_row_disable() -> None:
    throttled, delays = 0, []
    for attempt in range(1, RETRY_ATTEMPTS):
        decision = after_failure(429, "slow down", attempt, throttled)
        assert isinstance(decision, Retry)
        throttled = decision.throttled
        delays.append(decision.delay_s)
    assert delays == [max(1.0, float(n * n)) for n in range(1, RETRY_ATTEMPTS)]
    assert after_failure(429, "slow down", RETRY_ATTEMPTS, throttled) == Disable(
        status=429, message=THROTTLED_MESSAGE
    )


def test_server_errors_are_retried_then_given_up_with_the_feed_left_active() -> None:
    assert after_failure(503, "down", 1, 0) == Retry(delay_s=1.0, throttled=0)
    assert isinstance(after_failure(503, "down", RETRY_ATTEMPTS, 3), GiveUp)


def test_errors_map_to_the_api_status() -> None:
    assert http_status(NotFound()) == 404
    assert http_status(Forbidden()) == 403
    assert http_status(Throttled()) == 429
    assert http_status(Unavailable()) == 503
    assert http_status(RuntimeError()) == 500


def test_rendezvous_moves_only_the_dead_members_keys() -> None:
    keys = [f"ns.t{i}" for i in range(600)]
    three = {"a", "b", "c"}
    before = {key: owner_of(key, three) for key in keys}
    assert set(before.values()) == three  # spread over all
    after = {key: owner_of(key, three - {"b"}) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert moved and all(before[key] == "b" for key in moved)
    assert owner_of("k", []) is None


def test_members_not_heard_from_are_dead() -> None:
    assert alive({"a": 100.0, "b": 97.5, "c": 90.0}, 100.0, 3.0) == {"a", "b"}


def test_payload_string_becomes_an_object() -> None:
    assert payload_of("hi") == {"payload": "hi"}
    assert payload_of({"a": 1}) == {"a": 1}
    assert payload_of(None) == {}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("alarm", {}, "alarms trigger feed is missing the cron parameter"),
        ("alarm", {"cron": "* * *"}, "cron pattern '* * *' is not valid"),
        ("alarm", {"cron": "* * * * *", "timezone": "Nowhere/Land"}, "Invalid timezone."),
        (
            "alarm",
            {"cron": "* * * * *", "maxTriggers": 3, "stopDate": FUTURE},
            "maxTriggers is not allowed when the stopDate parameter is specified",
        ),
        ("alarm", {"cron": "* * * * *", "startDate": NOW - 1}, "must be in the future"),
        (
            "alarm",
            {"cron": "0 0 1 1 *", "stopDate": NOW + 60_000},
            "the first scheduled trigger fire is not until after the stop date",
        ),
        ("interval", {}, "interval trigger feed is missing the minutes parameter"),
        ("interval", {"minutes": "1.5"}, "the minutes parameter must be an integer"),
        ("interval", {"minutes": -2}, "the minutes parameter must be an integer greater than zero"),
        (
            "interval",
            {"minutes": 2, "maxTriggers": 3, "stopDate": FUTURE},
            "maxTriggers is not supported for the interval trigger feed",
        ),
        ("once", {}, "alarms once trigger feed is missing the date parameter"),
        ("once", {"date": "someday"}, "date parameter 'someday' is not a valid Date"),
        (
            "once",
            {"date": FUTURE, "deleteAfterFire": "maybe"},
            "deleteAfterFire parameter must be one of [false, true, rules].",
        ),
    ],
)
def test_create_checks_say_what_openwhisk_says(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        AlarmProvider(name).configure(params, None, NOW)
    assert message in refused.value.message


def test_create_stores_what_a_read_shows() -> None:
    alarm = AlarmProvider("alarm").configure(
        {"cron": "*/5 * * * * *", "timezone": "Europe/Berlin", "trigger_payload": "x", "strict": "false"},
        None,
        NOW,
    )
    assert alarm == {
        "payload": {"payload": "x"},
        "cron": "*/5 * * * * *",
        "timezone": "Europe/Berlin",
        "strict": False,
    }
    interval = AlarmProvider("interval").configure({"minutes": "3"}, None, NOW)
    assert interval == {"payload": {}, "minutes": 3, "startDate": NOW + 30_000}
    once = AlarmProvider("once").configure({"date": FUTURE, "deleteAfterFire": "Rules"}, None, NOW)
    assert once == {"payload": {}, "date": FUTURE, "deleteAfterFire": "rules"}


def test_update_merges_and_needs_something_to_update() -> None:
    provider = AlarmProvider("alarm")
    stored = provider.configure({"cron": "* * * * *"}, None, NOW)
    assert provider.configure({"cron": "0 * * * *"}, stored, NOW)["cron"] == "0 * * * *"
    assert provider.configure({"timezone": "America/New_York"}, stored, NOW)["timezone"] == "America/New_York"
    with pytest.raises(BadRequest, match="no updatable parameters were specified"):
        provider.configure({"minutes": 3}, stored, NOW)
    with pytest.raises(BadRequest, match="Invalid timezone"):
        provider.configure({"timezone": "Atlantis/Capital"}, stored, NOW)
