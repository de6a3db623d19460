"""OpenWhisk's alarm firing rules as a decision: after a refused fire, retry (and when), disable, or give up.

From openwhisk-package-alarms: up to 10 attempts; the delay before the next is max(1 s, throttled² s) where
`throttled` counts the 429s so far; a 4xx other than 408, 409 and 429 disables the feed; 10 consecutive 429s
disable it too; any other failure (5xx, unreachable) is retried and then given up on, the feed left active.
"""

from __future__ import annotations

from typing import Final

import msgspec

from broker.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SquallError,
    Throttled,
    Unauthorized,
    Unavailable,
)

RETRY_ATTEMPTS: Final = 10
RETRY_DELAY_S: Final = 1.0
_KEEP_ACTIVE: Final = frozenset({408, 409, 429})
_STATUS: Final[tuple[tuple[type[SquallError], int], ...]] = (
    (Throttled, 429),
    (Conflict, 409),
    (NotFound, 404),
    (Forbidden, 403),
    (Unauthorized, 401),
    (PayloadTooLarge, 413),
    (BadRequest, 400),
    (Unavailable, 503),
)
THROTTLED_MESSAGE: Final = (
    "Automatically disabled after continuously receiving a 429 status code when firing the trigger"
)


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    delay_s: float
    throttled: int  # the 429s counted so far


class Disable(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    message: str


class GiveUp(msgspec.Struct, frozen=True, kw_only=True):
    message: str


def http_status(exc: BaseException) -> int:
    """The HTTP status the API would answer a fire refused with `exc` (500 for anything unexpected)."""
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def after_failure(status: int, message: str, attempt: int, throttled: int) -> Retry | Disable | GiveUp:
    """What to do after attempt number `attempt` (1 = the first) was refused with `status`."""
    if 400 <= status < 500 and status not in _KEEP_ACTIVE:
        return Disable(status=status, message=f"Trigger automatically disabled: {message}")
    if status == 429:
        throttled += 1
    if attempt < RETRY_ATTEMPTS:
        return Retry(delay_s=max(RETRY_DELAY_S, float(throttled**2)), throttled=throttled)
    if throttled >= RETRY_ATTEMPTS:
        return Disable(status=429, message=THROTTLED_MESSAGE)
    return GiveUp(message=f"Unable to fire the trigger after {RETRY_ATTEMPTS} attempts: {message}")
