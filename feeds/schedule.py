"""When an alarm fires: cron (5 or 6 fields, in a time zone), interval and once plans, as pure functions of time.

All instants are epoch milliseconds. A cron is evaluated by cronsim in the plan's IANA zone with Debian cron's
DST rules: an instant that falls in the hour skipped in spring fires right after the change, a fixed-time
instant in the hour repeated in autumn fires once, and a wildcard-hour cron fires in both passes (the real
time between them is an hour).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any, Final

import msgspec
from cronsim import CronSim, CronSimError

from broker.errors import BadRequest

ALARM, INTERVAL, ONCE = "alarm", "interval", "once"
MISSED_LAST, MISSED_NONE = "last", "none"
# At most this many instants are fired at once when catching up (a one-second cron over a takeover window
# has ten); a larger catch-up fires the latest ones.
MAX_CATCH_UP: Final = 600
_UTC = dt.UTC


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """An alarm's schedule with every date resolved to epoch ms: what the scheduler computes instants from."""

    kind: str  # ALARM, INTERVAL or ONCE
    cron: str | None = None
    timezone: str | None = None  # IANA name; None = UTC
    offset_s: int = 0  # a non-strict 5-field cron fires this many seconds into its minute
    minutes: int | None = None
    date: int | None = None  # ONCE: the one instant
    start: int | None = None  # no instant before it
    stop: int | None = None  # no instant at or after it
    max_triggers: int = -1  # deprecated maxTriggers: -1 = unlimited


# -- parameters -------------------------------------------------------------------------------------------


def epoch_ms(value: Any) -> int | None:
    """A date parameter as epoch ms: an integer (ms since 1970) or an ISO 8601 string (UTC when it names no
    offset); None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_UTC)
        return int(parsed.timestamp() * 1000)
    return None


def validate_date(value: Any, name: str, now_ms: int, start_ms: int | None = None) -> int:
    """OpenWhisk's checks of `date`, `startDate` and `stopDate`, with its messages: valid, in the future, and
    after `startDate` when one is given."""
    ms = epoch_ms(value)
    if ms is None:
        raise BadRequest(f"{name} parameter '{value}' is not a valid Date")
    if now_ms >= ms:
        raise BadRequest(f"{name} parameter '{value}' must be in the future")
    if start_ms is not None and ms <= start_ms:
        raise BadRequest(f"{name} parameter '{value}' must be greater than the startDate parameter")
    return ms


def zone(name: str | None) -> dt.tzinfo:
    """The IANA zone `name` (UTC when None or empty); BadRequest "Invalid timezone." as OpenWhisk says it."""
    if not name:
        return _UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BadRequest("Invalid timezone.") from None


def check_cron(cron: Any, timezone: str | None, limit_fields: bool = False) -> str:
    """A valid cron pattern (5 fields, or 6 with seconds first) as given; OpenWhisk's messages otherwise."""
    zone(timezone)
    if not isinstance(cron, str) or not cron.strip():
        raise BadRequest(f"cron pattern '{cron}' is not valid")
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise BadRequest(f"cron pattern '{cron}' is not valid")
    try:
        CronSim(cron, dt.datetime(2000, 1, 1, tzinfo=_UTC))
    except CronSimError:
        raise BadRequest(f"cron pattern '{cron}' is not valid") from None
    if limit_fields and len(fields) == 6 and fields[0] != "0":
        raise BadRequest("cron pattern is limited to 5 fields with 1 minute as the finest granularity")
    return cron


def spread_offset(cron: str, strict: bool, trigger: str) -> int:
    """OpenWhisk's `strict: false`: a 5-field cron fires a fixed number of seconds (0-59, from a hash of the
    trigger's name) into its minute, so that many alarms on `* * * * *` do not all fire at :00."""
    if strict or len(cron.split()) != 5:
        return 0
    return int.from_bytes(hashlib.sha256(trigger.encode()).digest()[:4], "big") % 60


def plan_of(kind: str, config: Mapping[str, Any], trigger: str) -> Plan:
    """The plan of a stored (already validated) alarm configuration."""
    cron = config.get("cron")
    strict = config.get("strict", True)
    return Plan(
        kind=kind,
        cron=cron,
        timezone=config.get("timezone") or None,
        offset_s=spread_offset(cron, strict is not False, trigger) if cron else 0,
        minutes=config.get("minutes"),
        date=epoch_ms(config.get("date")),
        start=epoch_ms(config.get("startDate")),
        stop=epoch_ms(config.get("stopDate")),
        max_triggers=int(config.get("maxTriggers", -1) or -1),
    )


# -- instants -----------------------------------------------------------------------------------------------


def _cron_after(plan: Plan, after_ms: int) -> Iterator[int]:
    """The cron's instants strictly after `after_ms`, in order."""
    assert plan.cron is not None
    shifted = after_ms - plan.offset_s * 1000
    start = dt.datetime.fromtimestamp(shifted / 1000, tz=zone(plan.timezone))
    try:
        for moment in CronSim(plan.cron, start):
            yield int(moment.timestamp()) * 1000 + plan.offset_s * 1000
    except CronSimError:
        return


def _cron_before(plan: Plan, at_or_before_ms: int) -> int | None:
    assert plan.cron is not None
    shifted = at_or_before_ms - plan.offset_s * 1000 + 1  # reverse iteration is strictly before
    start = dt.datetime.fromtimestamp(shifted / 1000, tz=zone(plan.timezone))
    moment = next(iter(CronSim(plan.cron, start, reverse=True)), None)
    return None if moment is None else int(moment.timestamp()) * 1000 + plan.offset_s * 1000


def next_instant(plan: Plan, after_ms: int) -> int | None:
    """The plan's first instant strictly after `after_ms`, not before its start and before its stop; None
    when it has no more."""
    if plan.start is not None:
        after_ms = max(after_ms, plan.start - 1)
    found: int | None
    if plan.kind == ONCE:
        found = plan.date if plan.date is not None and plan.date > after_ms else None
    elif plan.kind == INTERVAL:
        period = (plan.minutes or 1) * 60_000
        origin = plan.start if plan.start is not None else 0
        steps = (after_ms - origin) // period + 1 if after_ms >= origin else 0
        found = origin + steps * period
    else:
        found = next(_cron_after(plan, after_ms), None)
    if found is not None and plan.stop is not None and found >= plan.stop:
        return None
    return found


class Instants:
    """A plan's instants read in order, `after(previous)` by `after(previous)`: a cron's expression is parsed
    once and its iterator kept, instead of once per instant (what a thousand one-second alarms would cost)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._cron: Iterator[int] | None = None
        self._last: int | None = None

    def after(self, after_ms: int) -> int | None:
        """The same answer as `next_instant(plan, after_ms)`."""
        plan = self.plan
        if plan.kind in (ONCE, INTERVAL):
            return next_instant(plan, after_ms)
        if plan.start is not None:
            after_ms = max(after_ms, plan.start - 1)
        if self._cron is None or self._last is None or after_ms != self._last:
            self._cron = _cron_after(plan, after_ms)
        found = next(self._cron, None)
        self._last = found
        if found is not None and plan.stop is not None and found >= plan.stop:
            return None
        return found


def last_instant(plan: Plan, at_or_before_ms: int) -> int | None:
    """The plan's latest instant at or before `at_or_before_ms` (within its start and stop), or None."""
    if plan.stop is not None:
        at_or_before_ms = min(at_or_before_ms, plan.stop - 1)
    found: int | None
    if plan.kind == ONCE:
        found = plan.date if plan.date is not None and plan.date <= at_or_before_ms else None
    elif plan.kind == INTERVAL:
        period = (plan.minutes or 1) * 60_000
        origin = plan.start if plan.start is not None else 0
        found = origin + (at_or_before_ms - origin) // period * period if at_or_before_ms >= origin else None
    else:
        found = _cron_before(plan, at_or_before_ms)
    if found is not None and plan.start is not None and found < plan.start:
        return None
    return found


def instants_between(plan: Plan, after_ms: int, until_ms: int, limit: int = MAX_CATCH_UP) -> list[int]:
    """The plan's instants in (after_ms, until_ms], the latest `limit` of them at most."""
    found: list[int] = []
    cursor = after_ms
    while (instant := next_instant(plan, cursor)) is not None and instant <= until_ms:
        found.append(instant)
        if len(found) > limit:
            del found[0]
        cursor = instant
    return found


def catch_up(plan: Plan, since_ms: int, now_ms: int, takeover_ms: int, missed: str) -> list[int]:
    """The instants in (since_ms, now_ms] a process that just became the alarm's owner fires now.

    Those of the last `takeover_ms` are all fired: the previous owner may have died before firing them, and the
    ones it did fire are no-ops (their idempotency keys). Older ones were missed while no feeds process ran:
    `missed` = "last" fires the latest of them once, "none" skips them.
    """
    window_start = now_ms - takeover_ms
    recent = instants_between(plan, max(since_ms, window_start - 1), now_ms)
    if missed == MISSED_LAST and since_ms < window_start - 1:
        older = last_instant(plan, window_start - 1)
        if older is not None and older > since_ms:
            return [older, *recent]
    return recent


def exhausted_message(plan: Plan, fired: bool) -> str:
    """Why an alarm with no next instant is disabled (OpenWhisk's messages where it has one)."""
    if plan.kind == ONCE:
        return "Automatically disabled after firing once" if fired else "the fire once date has expired"
    if not fired:
        return "the stop date has expired"
    if plan.kind == INTERVAL:
        return "Automatically disabled after firing last scheduled interval trigger"
    return "Automatically disabled after firing last scheduled cron trigger"


MAX_TRIGGERS_MESSAGE: Final = "Automatically disabled after reaching max triggers"
