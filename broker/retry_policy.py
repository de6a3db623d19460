"""A rule's retry policy (a Squall addition): how often a failed rule-fired run is tried again, and when.

Pure: validation, the delay before an attempt, and whether an outcome is retried.
"""

from __future__ import annotations

from typing import Final

import msgspec

from broker.errors import BadRequest

# OpenWhisk's three failure statuses (broker/activations.py names them; entities import this module, and
# activations import entities, hence the literals).
FAILURES: Final = ("application error", "action developer error", "whisk internal error")
BACKOFFS: Final = ("fixed", "exponential")
MAX_ATTEMPTS: Final = 10
MAX_DELAY_MS: Final = 3_600_000  # an hour: a longer wait belongs in the dead-letter stream


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """`{"attempts": 3, "delayMs": 1000, "backoff": "exponential", "maxDelayMs": 60000, "on": [...]}`.

    `attempts` counts every run, the first included; `on` lists the failure statuses that are retried
    (OpenWhisk's activation statuses; all three failures by default).
    """

    attempts: int = 3
    delayMs: int = 1000
    backoff: str = "exponential"
    maxDelayMs: int = 60_000
    on: list[str] = msgspec.field(default_factory=lambda: list(FAILURES))


def validate_retry(policy: RetryPolicy) -> RetryPolicy:
    """Return `policy` unchanged, or raise a 400 that says which field is wrong."""
    if not 1 <= policy.attempts <= MAX_ATTEMPTS:
        raise BadRequest(f"The retry policy's attempts must be between 1 and {MAX_ATTEMPTS}.")
    if not 0 <= policy.delayMs <= MAX_DELAY_MS:
        raise BadRequest(f"The retry policy's delayMs must be between 0 and {MAX_DELAY_MS}.")
    if not policy.delayMs <= policy.maxDelayMs <= MAX_DELAY_MS:
        raise BadRequest(f"The retry policy's maxDelayMs must be between delayMs and {MAX_DELAY_MS}.")
    if policy.backoff not in BACKOFFS:
        raise BadRequest(f"The retry policy's backoff must be one of: {', '.join(BACKOFFS)}.")
    unknown = [s for s in policy.on if s not in FAILURES]
    if unknown or not policy.on:
        raise BadRequest(f"The retry policy's 'on' must list some of: {', '.join(FAILURES)}.")
    return policy


def delay_ms(policy: RetryPolicy, attempt: int) -> int:
    """How long to wait after failed attempt number `attempt` (1-based) before the next one."""
    if policy.backoff == "fixed":
        return policy.delayMs
    # A shift, not `2 ** n`: typeshed types int ** int as Any (a negative exponent gives a float).
    return min(policy.maxDelayMs, policy.delayMs << max(0, attempt - 1))


def should_retry(policy: RetryPolicy | None, status: str, attempt: int) -> bool:
    """Whether a run that ended in `status` on attempt `attempt` (1-based) is tried again."""
    return policy is not None and status in policy.on and attempt < policy.attempts
