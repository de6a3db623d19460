"""Alarm schedules: next and last instants in a zone across DST changes, start/stop, intervals, catching up."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from broker.errors import BadRequest
from feeds.schedule import (
    ALARM,
    INTERVAL,
    ONCE,
    Plan,
    catch_up,
    check_cron,
    epoch_ms,
    exhausted_message,
    instants_between,
    last_instant,
    next_instant,
    plan_of,
    spread_offset,
    validate_date,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, tz=dt.UTC) -> int:
    return int(dt.datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp() * 1000)


def local(instant: int, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(instant / 1000, tz).isoformat()


def cron(expr: str, tz: str | None = None, **kw: int | None) -> Plan:
    return Plan(kind=ALARM, cron=expr, timezone=tz, **kw)  # type: ignore[arg-type]


def test_six_fields_fire_every_second_and_five_every_minute() -> None:
    t = ms(2026, 1, 1, 12, 0, 0)
    assert next_instant(cron("* * * * * *"), t) == t + 1000
    assert next_instant(cron("* * * * * *"), t + 1) == t + 1000
    assert next_instant(cron("* * * * *"), t) == t + 60_000
    assert next_instant(cron("*/15 * * * * *"), t + 500) == t + 15_000


def test_daily_cron_in_a_zone_across_spring_forward_new_york() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist that day, it fires right after the jump.
    plan = cron("30 2 * * *", "America/New_York")
    first = next_instant(plan, ms(2026, 3, 7, 12, tz=NY))
    assert first is not None
    assert local(first, NY) == "2026-03-08T03:00:00-04:00"
    second = next_instant(plan, first)
    assert second is not None
    assert local(second, NY) == "2026-03-09T02:30:00-04:00"


def test_fixed_time_in_the_repeated_hour_fires_once_fall_back_new_york() -> None:
    # 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:30 happens twice, the alarm fires once.
    plan = cron("30 1 * * *", "America/New_York")
    found = instants_between(plan, ms(2026, 10, 31, 12, tz=NY), ms(2026, 11, 2, 12, tz=NY))
    assert [local(i, NY) for i in found] == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


def test_wildcard_hour_fires_in_both_passes_of_the_repeated_hour() -> None:
    plan = cron("0,30 * * * *", "America/New_York")
    found = instants_between(plan, ms(2026, 11, 1, 0, 45, tz=NY), ms(2026, 11, 1, 2, 0, tz=NY) + 3_600_000)
    # Real time between instants stays 30 minutes through the change.
    assert [b - a for a, b in itertools_pairs(found)] == [1_800_000] * (len(found) - 1)
    assert local(found[0], NY) == "2026-11-01T01:00:00-04:00"
    assert "2026-11-01T01:00:00-05:00" in [local(i, NY) for i in found]


def itertools_pairs(values: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(values))


def test_berlin_spring_forward_and_fall_back() -> None:
    spring = cron("15 2 * * *", "Europe/Berlin")  # 2026-03-29 02:00 CET -> 03:00 CEST
    first = next_instant(spring, ms(2026, 3, 28, 12, tz=BERLIN))
    assert first is not None
    assert local(first, BERLIN) == "2026-03-29T03:00:00+02:00"
    autumn = cron("15 2 * * *", "Europe/Berlin")  # 2026-10-25 03:00 CEST -> 02:00 CET
    found = instants_between(autumn, ms(2026, 10, 24, 12, tz=BERLIN), ms(2026, 10, 26, 12, tz=BERLIN))
    assert [local(i, BERLIN) for i in found] == ["2026-10-25T02:15:00+02:00", "2026-10-26T02:15:00+01:00"]


def test_nine_oclock_follows_the_zone_not_utc() -> None:
    plan = cron("0 9 * * *", "Europe/Berlin")
    winter = next_instant(plan, ms(2026, 1, 10))
    summer = next_instant(plan, ms(2026, 7, 10))
    assert winter == ms(2026, 1, 10, 8)  # CET = UTC+1
    assert summer == ms(2026, 7, 10, 7)  # CEST = UTC+2


def test_start_and_stop_bound_the_instants() -> None:
    t = ms(2026, 1, 1)
    plan = cron("* * * * * *", start=t + 10_000, stop=t + 13_000)
    assert next_instant(plan, t) == t + 10_000
    assert instants_between(plan, t, t + 60_000) == [t + 10_000, t + 11_000, t + 12_000]
    assert next_instant(plan, t + 12_000) is None  # the stop itself is not an instant
    assert last_instant(plan, t + 60_000) == t + 12_000
    assert last_instant(plan, t + 5_000) is None


def test_interval_counts_from_its_start() -> None:
    start = ms(2026, 1, 1, 0, 0, 30)
    plan = Plan(kind=INTERVAL, minutes=2, start=start)
    assert next_instant(plan, start - 60_000) == start
    assert next_instant(plan, start) == start + 120_000
    assert next_instant(plan, start + 119_999) == start + 120_000
    assert last_instant(plan, start + 250_000) == start + 240_000
    assert last_instant(plan, start - 1) is None


def test_once_has_one_instant() -> None:
    date = ms(2026, 5, 1)
    plan = Plan(kind=ONCE, date=date)
    assert next_instant(plan, date - 1) == date
    assert next_instant(plan, date) is None
    assert last_instant(plan, date + 10) == date


def test_strict_false_spreads_five_field_crons_over_the_minute() -> None:
    offset = spread_offset("* * * * *", strict=False, trigger="t1")
    assert 0 <= offset < 60
    assert spread_offset("* * * * *", strict=True, trigger="t1") == 0
    assert spread_offset("* * * * * *", strict=False, trigger="t1") == 0
    plan = plan_of(ALARM, {"cron": "* * * * *", "strict": False}, "t1")
    t = ms(2026, 1, 1)
    assert next_instant(plan, t) == (t + offset * 1000 if offset else t + 60_000)
    assert all((i - t) % 60_000 == offset * 1000 for i in instants_between(plan, t, t + 300_000))


def test_catch_up_fires_every_instant_of_the_takeover_window() -> None:
    plan = cron("* * * * * *")
    now = ms(2026, 1, 1, 12) + 400
    since = now - 5_400  # the last fire the status knows of
    assert catch_up(plan, since, now, 10_000, "last") == [now - 400 - 4000 + i * 1000 for i in range(5)]
    assert catch_up(plan, since, now, 10_000, "none") == catch_up(plan, since, now, 10_000, "last")


def test_catch_up_after_downtime_fires_the_last_missed_or_none() -> None:
    plan = cron("0 * * * *")  # hourly
    now = ms(2026, 1, 1, 12, 30)
    since = ms(2026, 1, 1, 8)  # fired at 08:00, then nothing ran
    assert catch_up(plan, since, now, 10_000, "last") == [ms(2026, 1, 1, 12)]
    assert catch_up(plan, since, now, 10_000, "none") == []
    # Nothing was missed: nothing to fire.
    assert catch_up(plan, ms(2026, 1, 1, 12), now, 10_000, "last") == []


def test_catch_up_of_a_one_second_cron_after_a_day_is_bounded() -> None:
    plan = cron("* * * * * *")
    now = ms(2026, 1, 2)
    due = catch_up(plan, ms(2026, 1, 1), now, 10_000, "last")
    assert due[0] == now - 10_001 // 1000 * 1000 - 1000  # the last instant before the window
    assert due[1:] == [now - 10_000 + i * 1000 for i in range(11)]


def test_dates_as_ms_or_iso_8601() -> None:
    assert epoch_ms(1_700_000_000_000) == 1_700_000_000_000
    assert epoch_ms("2026-01-01T00:00:00Z") == ms(2026, 1, 1)
    assert epoch_ms("2026-01-01T01:00:00+01:00") == ms(2026, 1, 1)
    assert epoch_ms("2026-01-01T00:00:00") == ms(2026, 1, 1)  # no offset: UTC
    assert epoch_ms("tomorrow") is None
    assert epoch_ms(True) is None


def test_date_checks_say_what_openwhisk_says() -> None:
    now = ms(2026, 1, 1)
    with pytest.raises(BadRequest, match="startDate parameter 'nope' is not a valid Date"):
        validate_date("nope", "startDate", now)
    with pytest.raises(BadRequest, match=r"date parameter '.*' must be in the future"):
        validate_date(now - 1, "date", now)
    with pytest.raises(BadRequest, match="must be greater than the startDate parameter"):
        validate_date(now + 10, "stopDate", now, now + 20)
    assert validate_date("2026-02-01T00:00:00Z", "date", now) == ms(2026, 2, 1)


def test_cron_checks() -> None:
    assert check_cron("*/5 * * * *", None) == "*/5 * * * *"
    assert check_cron("0 0 9 * * MON-FRI", "Europe/Berlin")
    for bad in ("* * * *", "61 * * * *", "", "a b c d e", "* * * * * * *"):
        with pytest.raises(BadRequest, match="is not valid"):
            check_cron(bad, None)
    with pytest.raises(BadRequest, match=r"^Invalid timezone\.$"):
        check_cron("* * * * *", "Mars/Olympus")
    with pytest.raises(BadRequest, match="limited to 5 fields"):
        check_cron("*/10 * * * * *", None, limit_fields=True)
    assert check_cron("0 * * * * *", None, limit_fields=True)


def test_exhausted_messages() -> None:
    assert exhausted_message(Plan(kind=ONCE), fired=True) == "Automatically disabled after firing once"
    assert "cron" in exhausted_message(cron("* * * * *"), fired=True)
    assert "interval" in exhausted_message(Plan(kind=INTERVAL, minutes=1), fired=True)


@pytest.mark.parametrize(
    "plan",
    [
        cron("30 2 * * *", "America/New_York"),  # across spring-forward and fall-back
        cron("*/20 * * * *", "Europe/Berlin"),
        cron("* * * * * *", start=ms(2026, 3, 8, 6, 59, 58), stop=ms(2026, 3, 8, 7, 0, 5)),
        Plan(kind=INTERVAL, minutes=7, start=ms(2026, 1, 1)),
    ],
)
def test_instants_read_in_order_answer_as_next_instant(plan: Plan) -> None:
    from feeds.schedule import Instants

    instants = Instants(plan)
    cursor = ms(2026, 3, 7)
    expected = []
    reference = cursor
    while (found := next_instant(plan, reference)) is not None and len(expected) < 200:
        expected.append(found)
        reference = found
    got = []
    while (found := instants.after(cursor)) is not None and len(got) < 200:
        got.append(found)
        cursor = found
    assert got == expected
    if len(expected) > 3:  # asking out of order starts over, with the same answers
        assert instants.after(expected[0]) == expected[1]
