"""The alarm providers `alarm` (cron), `interval` and `once`: OpenWhisk's parameters, checks and messages.

What a CREATE or UPDATE stores is the configuration a READ shows (`payload`, `cron`, `timezone`, `startDate`,
`stopDate`, `minutes`, `date`, `deleteAfterFire`, …), dates as they were given; feeds/schedule.py turns it into
instants, feeds/alarm_scheduler.py fires them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from broker.errors import BadRequest
from broker.feed_registry import FeedRegistration
from feeds.schedule import (
    ALARM,
    INTERVAL,
    ONCE,
    check_cron,
    epoch_ms,
    next_instant,
    plan_of,
    validate_date,
)

# OpenWhisk's interval alarm starts 30 s after its CREATE when no startDate is given.
INTERVAL_DEFAULT_START_MS: Final = 30_000
DELETE_AFTER_FIRE: Final = ("false", "true", "rules")
PROVIDERS: Final = (ALARM, INTERVAL, ONCE)


def payload_of(value: Any) -> dict[str, Any]:
    """`trigger_payload`: an object is the payload, a string `s` becomes `{"payload": s}` (as any other
    value does), nothing is `{}`."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {"payload": value}


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadRequest(f"the {name} parameter must be true or false")


def _minutes(value: Any) -> int:
    """OpenWhisk's `+minutes !== parseInt(minutes)`: an integer, or a string of one."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    if number is None:
        raise BadRequest("the minutes parameter must be an integer")
    if number <= 0:
        raise BadRequest("the minutes parameter must be an integer greater than zero")
    return number


def _delete_after_fire(value: Any) -> str:
    choice = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if choice not in DELETE_AFTER_FIRE:
        raise BadRequest("deleteAfterFire parameter must be one of [false, true, rules].")
    return choice


def _given(params: Mapping[str, Any], name: str) -> bool:
    """Whether a parameter counts as given: OpenWhisk tests them for truthiness (`if (params.x)`)."""
    value = params.get(name)
    return value is not None and value != "" and value is not False and value != 0


class AlarmProvider:
    """`/whisk.system/alarms/{alarm,interval,once}`: one class, its `name` choosing the kind."""

    def __init__(self, name: str) -> None:
        if name not in PROVIDERS:
            raise ValueError(f"not an alarm provider: {name}")
        self.name = name

    def configure(
        self, params: Mapping[str, Any], previous: Mapping[str, Any] | None, now_ms: int
    ) -> dict[str, Any]:
        if previous is None:
            return self._create(params, now_ms)
        return self._update(params, previous, now_ms)

    def answer(self, registration: FeedRegistration) -> dict[str, Any]:
        return {}

    # -- CREATE ------------------------------------------------------------------------------------------

    def _create(self, params: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
        config: dict[str, Any] = {"payload": payload_of(params.get("trigger_payload"))}
        if _given(params, "maxTriggers"):
            config["maxTriggers"] = params["maxTriggers"]
        if self.name == ONCE:
            if not _given(params, "date"):
                raise BadRequest("alarms once trigger feed is missing the date parameter")
            validate_date(params["date"], "date", now_ms)
            config["date"] = params["date"]
            if _given(params, "deleteAfterFire"):
                config["deleteAfterFire"] = _delete_after_fire(params["deleteAfterFire"])
            return config
        if self.name == INTERVAL:
            if not _given(params, "minutes"):
                raise BadRequest("interval trigger feed is missing the minutes parameter")
            config["minutes"] = _minutes(params["minutes"])
        else:
            if not _given(params, "cron"):
                raise BadRequest("alarms trigger feed is missing the cron parameter")
            timezone = params.get("timezone") or None
            limit = _given(params, "limitCronFields")
            config["cron"] = check_cron(params["cron"], timezone, limit)
            if timezone:
                config["timezone"] = timezone
            if "strict" in params and params["strict"] is not None:
                config["strict"] = _flag(params["strict"], "strict")
        if _given(params, "startDate"):
            validate_date(params["startDate"], "startDate", now_ms)
            config["startDate"] = params["startDate"]
        elif self.name == INTERVAL:
            config["startDate"] = now_ms + INTERVAL_DEFAULT_START_MS
        if _given(params, "maxTriggers") and _given(params, "stopDate"):
            if self.name == INTERVAL:
                raise BadRequest("maxTriggers is not supported for the interval trigger feed")
            raise BadRequest("maxTriggers is not allowed when the stopDate parameter is specified")
        if _given(params, "stopDate"):
            start = epoch_ms(config.get("startDate"))
            validate_date(params["stopDate"], "stopDate", now_ms, start)
            config["stopDate"] = params["stopDate"]
            if self.name == ALARM and next_instant(plan_of(ALARM, config, ""), now_ms) is None:
                raise BadRequest("the first scheduled trigger fire is not until after the stop date")
        return config

    # -- UPDATE ------------------------------------------------------------------------------------------

    def _update(self, params: Mapping[str, Any], previous: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if _given(params, "trigger_payload"):
            changes["payload"] = payload_of(params["trigger_payload"])
        if self.name == ONCE:
            if _given(params, "date"):
                validate_date(params["date"], "date", now_ms)
                changes["date"] = params["date"]
            if _given(params, "deleteAfterFire"):
                changes["deleteAfterFire"] = _delete_after_fire(params["deleteAfterFire"])
        else:
            if self.name == INTERVAL and _given(params, "minutes"):
                changes["minutes"] = _minutes(params["minutes"])
            if self.name == ALARM and (_given(params, "cron") or _given(params, "timezone")):
                cron = params.get("cron") or previous.get("cron")
                timezone = params.get("timezone") or previous.get("timezone")
                limit = _given(params, "cron") and _given(params, "limitCronFields")
                check_cron(cron, timezone, limit)
                if _given(params, "cron"):
                    changes["cron"] = params["cron"]
                if _given(params, "timezone"):
                    changes["timezone"] = params["timezone"]
            if self.name == ALARM and "strict" in params and params["strict"] is not None:
                changes["strict"] = _flag(params["strict"], "strict")
            if _given(params, "startDate"):
                validate_date(params["startDate"], "startDate", now_ms)
                changes["startDate"] = params["startDate"]
            if _given(params, "stopDate"):
                start = params.get("startDate") or previous.get("startDate")
                validate_date(params["stopDate"], "stopDate", now_ms, epoch_ms(start))
                changes["stopDate"] = params["stopDate"]
            elif _given(params, "startDate") and previous.get("stopDate") is not None:
                start_ms, stop_ms = epoch_ms(params["startDate"]), epoch_ms(previous["stopDate"])
                if start_ms is not None and stop_ms is not None and start_ms >= stop_ms:
                    raise BadRequest(
                        f"startDate parameter '{params['startDate']}' must be less than the stopDate "
                        f"parameter '{previous['stopDate']}'"
                    )
        if not changes:
            raise BadRequest("no updatable parameters were specified")
        return {**previous, **changes}
