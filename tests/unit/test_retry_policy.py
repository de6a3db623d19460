"""Rule retry policies: validation bounds, the delay before each attempt, and which outcomes are retried."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from broker import codec
from broker.errors import BadRequest
from broker.retry_policy import (
    FAILURES,
    MAX_ATTEMPTS,
    MAX_DELAY_MS,
    RetryPolicy,
    delay_ms,
    should_retry,
    validate_retry,
)


def test_the_defaults_are_valid_and_retry_every_failure() -> None:
    policy = RetryPolicy()
    assert validate_retry(policy) is policy
    assert (policy.attempts, policy.delayMs, policy.backoff, policy.maxDelayMs) == (
        3,
        1000,
        "exponential",
        60_000,
    )
    assert policy.on == list(FAILURES)


def test_scalar_defaults_are_left_out_and_on_is_always_written() -> None:
    # omit_defaults leaves out scalars at their default; `on` (a default_factory msgspec cannot compare)
    # is always written, so a stored policy says which failures it retries.
    everything = {"on": list(FAILURES)}
    assert codec.to_builtins(RetryPolicy()) == everything
    policy = msgspec.json.decode(b'{"attempts": 5, "backoff": "fixed"}', type=RetryPolicy)
    assert codec.to_builtins(policy) == {"attempts": 5, "backoff": "fixed", **everything}
    assert msgspec.json.decode(msgspec.json.encode(policy), type=RetryPolicy) == policy


@pytest.mark.parametrize(
    "fields",
    [
        {"attempts": 1},
        {"attempts": MAX_ATTEMPTS},
        {"delayMs": 0},
        {"delayMs": MAX_DELAY_MS, "maxDelayMs": MAX_DELAY_MS},
        {"delayMs": 500, "maxDelayMs": 500},
        {"backoff": "fixed"},
        {"on": ["application error"]},
        {"on": ["whisk internal error", "action developer error"]},
    ],
)
def test_policies_within_bounds_are_valid(fields: dict[str, Any]) -> None:
    policy = RetryPolicy(**fields)
    assert validate_retry(policy) is policy


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": -1}, "attempts"),
        ({"attempts": MAX_ATTEMPTS + 1}, "attempts"),
        ({"delayMs": -1}, "delayMs"),
        ({"delayMs": MAX_DELAY_MS + 1, "maxDelayMs": MAX_DELAY_MS + 1}, "delayMs"),
        ({"delayMs": 2000, "maxDelayMs": 1000}, "maxDelayMs"),
        ({"maxDelayMs": MAX_DELAY_MS + 1}, "maxDelayMs"),
        ({"backoff": "linear"}, "backoff"),
        ({"on": []}, "'on'"),
        ({"on": ["success"]}, "'on'"),
        ({"on": ["application error", "timeout"]}, "'on'"),
    ],
)
def test_policies_out_of_bounds_are_400_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_retry(RetryPolicy(**fields))
    assert caught.value.message.startswith(f"The retry policy's {field} ")


def test_fixed_backoff_waits_the_same_every_time() -> None:
    policy = RetryPolicy(backoff="fixed", delayMs=250, maxDelayMs=300)
    assert [delay_ms(policy, n) for n in range(1, 6)] == [250] * 5


def test_exponential_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff="exponential", delayMs=1000, maxDelayMs=10_000)
    assert [delay_ms(policy, n) for n in range(1, 7)] == [1000, 2000, 4000, 8000, 10_000, 10_000]


def test_exponential_backoff_from_zero_stays_zero_and_a_far_attempt_stays_capped() -> None:
    assert delay_ms(RetryPolicy(delayMs=0, maxDelayMs=0), 5) == 0
    assert delay_ms(RetryPolicy(), 200) == 60_000
    assert delay_ms(RetryPolicy(), 0) == 1000  # an attempt before the first counts as the first


@pytest.mark.parametrize("status", FAILURES)
def test_every_failure_is_retried_by_default_until_the_attempts_run_out(status: str) -> None:
    policy = RetryPolicy(attempts=3)
    assert [should_retry(policy, status, n) for n in (1, 2, 3, 4)] == [True, True, False, False]


def test_only_the_listed_failures_are_retried() -> None:
    policy = RetryPolicy(on=["whisk internal error"])
    assert should_retry(policy, "whisk internal error", 1)
    assert not should_retry(policy, "application error", 1)
    assert not should_retry(policy, "action developer error", 1)


def test_success_and_no_policy_are_never_retried() -> None:
    assert not should_retry(RetryPolicy(), "success", 1)
    assert not should_retry(None, "application error", 1)
    assert not should_retry(RetryPolicy(attempts=1), "application error", 1)
