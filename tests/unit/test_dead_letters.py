"""Retry verdicts, dead-letter shapes, redrive ids and the invoker's attempt bookkeeping (pure)."""

from __future__ import annotations

import msgspec
import pytest

from broker import codec, subjects
from broker.activations import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    INTERNAL_ERROR,
    SUCCESS,
    Activation,
    annotation,
    make_response,
)
from broker.dead_letters import (
    REASON_MAX_CHARS,
    DeadLetter,
    FailureReason,
    after_attempt,
    attempt_ids,
    dead_letter,
    failure_reason,
    fit,
    msg_id,
    namespace_filter,
    public,
    redrive_id,
    redrive_invocation,
    validate_letter_id,
)
from broker.entities import KeyValue
from broker.errors import BadRequest
from broker.invocations import Invocation
from broker.retry_policy import RetryPolicy
from broker.trigger_events import attempt_activation_id
from runtimes.invoker import (
    GAVE_UP,
    MAX_ATTEMPTS,
    as_attempt,
    gave_up,
    mark_attempt,
    poison_limit,
)

FIRST = "0123456789abcdef0123456789abcdef"
POLICY = RetryPolicy(attempts=3, delayMs=10, backoff="fixed")


def invocation(**extra: object) -> Invocation:
    fields: dict[str, object] = {
        "activationId": FIRST,
        "namespace": "ns",
        "action": "ns/pkg/act",
        "params": {"x": 1},
        "subject": "uuid",
        "cause": "f" * 32,
        "rule": "ns/r",
        "trigger": "ns/t",
        "retry": POLICY,
        **extra,
    }
    return msgspec.convert(fields, Invocation)


def record(status: str = APPLICATION_ERROR, result: object = None, *, start: int = 1000) -> Activation:
    return Activation(
        namespace="ns",
        name="act",
        subject="uuid",
        activationId=FIRST,
        start=start,
        end=start + 5,
        duration=5,
        cause="f" * 32,
        response=make_response(status, {"error": "boom"} if result is None else result),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=[KeyValue(key="path", value="ns/pkg/act")],
    )


# -- verdicts ------------------------------------------------------------------------------------------------


def test_without_a_policy_a_failure_is_just_its_record() -> None:
    assert after_attempt(None, APPLICATION_ERROR, 1) == "done"
    assert after_attempt(None, INTERNAL_ERROR, 7) == "done"


def test_success_ends_a_run_whatever_the_attempt() -> None:
    assert after_attempt(POLICY, SUCCESS, 1) == "done"
    assert after_attempt(POLICY, SUCCESS, 3) == "done"


def test_retried_failures_retry_until_the_last_attempt_which_is_dead_lettered() -> None:
    assert [after_attempt(POLICY, DEVELOPER_ERROR, n) for n in (1, 2, 3, 4)] == [
        "retry",
        "retry",
        "dead-letter",
        "dead-letter",  # a crash redelivery past the policy
    ]


def test_a_failure_the_policy_does_not_retry_is_dead_lettered_at_once() -> None:
    policy = RetryPolicy(attempts=3, on=[INTERNAL_ERROR])
    assert after_attempt(policy, APPLICATION_ERROR, 1) == "dead-letter"
    assert after_attempt(policy, INTERNAL_ERROR, 1) == "retry"


# -- the letter ----------------------------------------------------------------------------------------------


def test_attempt_ids_start_with_the_first_and_are_distinct() -> None:
    ids = attempt_ids(FIRST, 3)
    assert ids[0] == FIRST and len(set(ids)) == 3
    assert ids == [attempt_activation_id(FIRST, n) for n in (1, 2, 3)]
    assert attempt_ids(FIRST, 0) == [FIRST]


def test_reason_is_the_status_and_the_error_as_text() -> None:
    assert failure_reason(record()) == FailureReason(status=APPLICATION_ERROR, error="boom")
    structured = failure_reason(record(result={"error": {"code": 7}}))
    assert structured.error == '{"code":7}'
    long = failure_reason(record(result={"error": "x" * (REASON_MAX_CHARS * 2)}))
    assert len(long.error) == REASON_MAX_CHARS


def test_dead_letter_shape() -> None:
    inv = invocation()
    last = record(DEVELOPER_ERROR, start=5000)
    letter = dead_letter(inv, last, 3, first_failed=1000)
    assert letter.id == FIRST and letter.namespace == "ns" and letter.action == "ns/pkg/act"
    assert (letter.rule, letter.trigger, letter.cause) == ("ns/r", "ns/t", "f" * 32)
    assert letter.reason.status == DEVELOPER_ERROR and letter.reason.error == "boom"
    assert letter.attempts == 3 and letter.activationIds == attempt_ids(FIRST, 3)
    assert letter.invocation == inv
    assert (letter.firstFailed, letter.lastFailed) == (1000, 5005)
    body = msgspec.json.decode(codec.encode(letter))
    assert set(body) == {
        "id",
        "namespace",
        "action",
        "rule",
        "trigger",
        "cause",
        "reason",
        "attempts",
        "activationIds",
        "invocation",
        "firstFailed",
        "lastFailed",
    }
    assert body["invocation"]["retry"]["backoff"] == "fixed"
    assert codec.decode(codec.encode(letter), DeadLetter) == letter


def test_first_failed_is_never_after_last_failed() -> None:
    letter = dead_letter(invocation(), record(start=1000), 1, first_failed=9999)
    assert letter.firstFailed == letter.lastFailed == 1005


def test_an_oversized_letter_drops_the_parameters_and_says_so() -> None:
    letter = dead_letter(invocation(params={"big": "x" * 5000}), record(), 1, 1000)
    assert fit(letter, 100_000) is letter
    small = fit(letter, 2000)
    assert small.paramsDropped and small.invocation.params == {}
    assert small.invocation.activationId == FIRST


def test_the_api_view_hides_the_callers_key() -> None:
    letter = dead_letter(invocation(sealed_api_key="v1.sealed"), record(), 1, 1000)
    shown = public(letter)
    assert shown.invocation.sealed_api_key is None and b"sealed" not in codec.encode(shown)
    assert letter.invocation.sealed_api_key == "v1.sealed"  # kept for the redrive
    plain = dead_letter(invocation(), record(), 1, 1000)
    assert public(plain) is plain


def test_a_redrive_gets_a_new_derived_id_and_keeps_the_rest() -> None:
    letter = dead_letter(invocation(published=5), record(), 3, 1000)
    again = redrive_invocation(letter, now=77)
    assert again.activationId == redrive_id(FIRST) != FIRST
    assert again.activationId not in attempt_ids(FIRST, 10)
    assert redrive_invocation(letter, now=88).activationId == again.activationId  # a repeat is the same
    assert again.published == 77
    assert again.retry == POLICY and again.cause == letter.cause and again.params == {"x": 1}


def test_letter_ids_and_subjects() -> None:
    assert validate_letter_id(FIRST) == FIRST
    for bad in ("", "ABCDEF0123456789abcdef0123456789", FIRST + "0", "../x", "g" * 32):
        with pytest.raises(BadRequest):
            validate_letter_id(bad)
    assert msg_id(FIRST) == f"dl-{FIRST}"
    assert subjects.deadletter_subject("my ns", FIRST) == f"deadletter.my=20ns.{FIRST}"
    assert namespace_filter("my ns") == "deadletter.my=20ns.*"


# -- the invoker's bookkeeping ---------------------------------------------------------------------------


def test_a_policy_lengthens_the_poison_limit_by_its_retries() -> None:
    assert poison_limit(invocation(retry=None)) == MAX_ATTEMPTS
    assert poison_limit(invocation()) == MAX_ATTEMPTS + 2
    assert gave_up(invocation(retry=None), 5) == GAVE_UP.format(n=4)
    assert "delivered 6 times, more than its retry policy's attempts" in gave_up(invocation(), 7)


def test_each_attempt_runs_under_its_own_id() -> None:
    inv = invocation()
    assert as_attempt(inv, 1) is inv
    second = as_attempt(inv, 2)
    assert second.activationId == attempt_activation_id(FIRST, 2)
    assert second.cause == inv.cause and second.params == inv.params


def test_retries_are_annotated_with_their_attempt_and_first_id() -> None:
    first = record()
    assert mark_attempt(first, 1, FIRST) is first
    retry = mark_attempt(first, 3, FIRST)
    assert annotation(retry, "attempt") == 3 and annotation(retry, "retryOf") == FIRST
    assert annotation(retry, "path") == "ns/pkg/act" and retry.cause == first.cause
