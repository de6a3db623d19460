"""A run's raw outcome becomes OpenWhisk's activation record: statuses, messages, annotations, logs, sizes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from broker import codec, params
from broker.action_refs import ResolvedAction
from broker.activations import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    INTERNAL_ERROR,
    SUCCESS,
    Activation,
    annotation,
    make_response,
)
from broker.entities import Action, ActionLimits, Exec, KeyValue
from broker.invocations import Invocation
from runtimes import activation_result as ar
from runtimes.contract import RunOutcome
from runtimes.sequences import component_arguments, component_id, memory_of, sequence_record

T0 = 1_700_000_000_000
AID = "0123456789abcdef0123456789abcdef"


def action(**overrides: Any) -> Action:
    fields: dict[str, Any] = {
        "namespace": "guest",
        "name": "hello",
        "version": "0.0.3",
        "exec": Exec(kind="python:3.11", code="def main(a): return a", binary=False),
        "limits": ActionLimits(timeout=3000, memory=256, logs=1),
    }
    fields.update(overrides)
    return Action(**fields)


def invocation(**overrides: Any) -> Invocation:
    fields: dict[str, Any] = {
        "activationId": AID,
        "namespace": "guest",
        "action": "guest/hello",
        "subject": "uuid-1",
        "published": T0 - 7,
    }
    fields.update(overrides)
    return Invocation(**fields)


def outcome(**overrides: Any) -> RunOutcome:
    fields: dict[str, Any] = {"start": T0, "end": T0 + 12, "cold": False, "status": 200, "body": b'{"a":1}'}
    fields.update(overrides)
    return RunOutcome(**fields)


def record(**overrides: Any) -> Activation:
    return ar.action_record(invocation=invocation(), action=action(), outcome=outcome(**overrides))


def notes(rec: Activation) -> dict[str, Any]:
    return {a.key: a.value for a in rec.annotations}


# -- statuses and results --------------------------------------------------------------------------------


def test_a_json_object_is_a_success_with_its_size() -> None:
    rec = record(body=b'{"greeting": "hi"}')
    assert rec.response.status == SUCCESS and rec.response.success
    assert rec.response.result == {"greeting": "hi"}
    assert rec.response.size == len('{"greeting": "hi"}')


def test_an_array_is_a_success() -> None:
    assert record(body=b"[1, 2]").response.result == [1, 2]
    assert record(body=b"[1, 2]").response.status == SUCCESS


def test_an_object_with_error_is_an_application_error_carrying_that_error() -> None:
    rec = record(body=b'{"error": {"why": "bad input"}, "other": 1}')
    assert rec.response.status == APPLICATION_ERROR and not rec.response.success
    assert rec.response.result == {"error": {"why": "bad input"}}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"42", "The action did not produce a valid JSON response: 42"),
        (200, b"not json", "The action did not produce a valid JSON response: not json"),
        (200, b"", "The action did not produce a valid JSON response."),
        (
            502,
            b'{"error": "The action did not return a dictionary or array."}',
            "The action did not return a dictionary or array.",
        ),
        (500, b'{"x": 1}', 'The action did not produce a valid JSON response: {"x": 1}'),
        (500, b"[1]", "The action did not produce a valid JSON response: [1]"),
    ],
)
def test_invalid_replies_are_developer_errors_in_openwhisk_words(
    status: int, body: bytes, error: str
) -> None:
    rec = record(status=status, body=body)
    assert rec.response.status == DEVELOPER_ERROR
    assert rec.response.result == {"error": error}


def test_no_reply_is_an_abnormal_run() -> None:
    rec = record(status=None, body=b"", crashed=True)
    assert rec.response.result == {
        "error": "The action did not produce a valid response and exited unexpectedly."
    }
    assert rec.response.status == DEVELOPER_ERROR


def test_an_oversized_result_is_an_application_error_quoting_its_start() -> None:
    big = b'{"x": "' + b"y" * (5 * 1024 * 1024) + b'"}'
    rec = record(body=big)
    assert rec.response.status == APPLICATION_ERROR
    message = rec.response.result["error"]
    assert message.startswith(
        f"The action produced a response that exceeded the allowed length: {len(big)} > 1048576 bytes. "
        'The truncated response was: {"x": "yyy'
    )
    quoted = message.partition("The truncated response was: ")[2]
    assert quoted == big[: 1024 * 1024].decode()  # up to the limit, as OpenWhisk's container client reads it
    assert rec.response.size == len(big)


def test_a_result_exactly_at_the_limit_passes() -> None:
    body = b'{"x": "' + b"y" * (1024 * 1024 - 9) + b'"}'
    assert len(body) == 1024 * 1024
    assert record(body=body).response.status == SUCCESS


def test_a_timeout_is_a_developer_error_with_the_timeout_annotation() -> None:
    rec = record(timed_out=True, status=None, body=b"")
    assert rec.response.result == {"error": "The action exceeded its time limits of 3000 milliseconds."}
    assert notes(rec)["timeout"] is True
    assert record().annotations[3] == KeyValue(key="timeout", value=False)


def test_a_timeout_during_init_says_so() -> None:
    rec = record(timed_out=True, timed_out_in_init=True, cold=True, status=None, body=b"")
    assert rec.response.result == {
        "error": "The action exceeded its time limits of 3000 milliseconds during initialization."
    }


def test_a_failed_init_uses_its_error_field_or_openwhisk_words() -> None:
    rec = record(
        cold=True, init_status=502, init_body=b'{"error": "SyntaxError: bad"}', status=None, body=b""
    )
    assert rec.response.status == DEVELOPER_ERROR
    assert rec.response.result == {"error": "SyntaxError: bad"}
    rec = record(cold=True, init_status=500, init_body=b"oops", status=None, body=b"")
    assert rec.response.result == {"error": "The action failed during initialization: oops"}
    rec = record(cold=True, init_status=500, init_body=b"", status=None, body=b"")
    assert rec.response.result == {"error": "The action failed during initialization."}


def test_a_container_dying_in_init_is_an_abnormal_initialization() -> None:
    rec = record(cold=True, crashed=True, init_ms=None, status=None, body=b"")
    assert rec.response.result == {"error": "The action did not initialize and exited unexpectedly."}
    # Dying during the run of a cold start (init went through) is an abnormal run instead.
    rec = record(cold=True, crashed=True, init_ms=4, status=None, body=b"")
    assert rec.response.result == {
        "error": "The action did not produce a valid response and exited unexpectedly."
    }


# -- the record around the response --------------------------------------------------------------------------


def test_record_fields_follow_openwhisk() -> None:
    rec = ar.action_record(
        invocation=invocation(cause="f" * 32, binding="guest/bound"),
        action=action(namespace="other/pkg"),
        outcome=outcome(cold=True, init_ms=30),
    )
    assert (rec.namespace, rec.name, rec.subject, rec.activationId) == ("guest", "hello", "uuid-1", AID)
    assert (rec.start, rec.end, rec.duration, rec.version, rec.publish) == (T0, T0 + 12, 12, "0.0.3", False)
    assert rec.cause == "f" * 32
    assert [a.key for a in rec.annotations] == [
        "limits",
        "path",
        "kind",
        "timeout",
        "initTime",
        "waitTime",
        "binding",
    ]
    assert notes(rec) == {
        "limits": {"timeout": 3000, "memory": 256, "logs": 1, "concurrency": 1},
        "path": "other/pkg/hello",
        "kind": "python:3.11",
        "timeout": False,
        "initTime": 30,
        "waitTime": 7,
        "binding": "guest/bound",
    }


def test_init_time_appears_only_on_a_cold_start() -> None:
    assert "initTime" not in notes(record(cold=False, init_ms=None))
    assert notes(record(cold=True, init_ms=5))["initTime"] == 5


def test_a_sequence_component_is_marked_caused_by_sequence() -> None:
    rec = ar.action_record(
        invocation=invocation(), action=action(), outcome=outcome(), caused_by_sequence=True
    )
    assert notes(rec)["causedBy"] == "sequence"
    assert "causedBy" not in notes(record())


def test_the_record_encodes_as_openwhisk_shows_it() -> None:
    shown = msgspec.json.decode(codec.encode(record()))
    assert set(shown) == {
        "namespace", "name", "subject", "activationId", "start", "end", "duration",
        "response", "logs", "version", "publish", "annotations",
    }  # fmt: skip
    assert shown["response"] == {"status": "success", "success": True, "result": {"a": 1}, "size": 7}


# -- logs ---------------------------------------------------------------------------------------------------


def test_truncated_logs_end_with_openwhisk_notice_once() -> None:
    lines = ["2024-01-01T00:00:00.000000Z      stdout: x"]
    rec = record(logs=lines, logs_truncated=True)
    assert rec.logs[:-1] == lines
    assert rec.logs[-1].endswith(
        " stderr: Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes."
    )
    assert rec.logs[-1][:30].rstrip().endswith("Z") and rec.logs[-1][30] == " "
    # A pool that wrote the notice itself does not get a second one.
    again = record(logs=rec.logs, logs_truncated=True)
    assert again.logs == rec.logs


WARNING = "stderr: The action did not initialize or run as expected. Log data might be missing."


@pytest.mark.parametrize(
    "fields",
    [
        {"timed_out": True, "status": None, "body": b""},
        {"timed_out": True, "timed_out_in_init": True, "cold": True, "status": None, "body": b""},
        {"cold": True, "init_status": 502, "init_body": b'{"error": "x"}', "status": None, "body": b""},
        {"cold": True, "crashed": True, "init_ms": None, "status": None, "body": b""},
        {"crashed": True, "status": None, "body": b""},
        {"status": 400, "body": b'{"error": "command exited"}'},
        {"status": 502, "body": b'{"error": "The action did not return a dictionary or array."}'},
    ],
)
def test_every_developer_error_keeps_its_lines_and_ends_with_openwhisks_warning(
    fields: dict[str, Any],
) -> None:
    printed = [f"{ar.log_time(T0)} stdout: before the failure"]
    rec = record(logs=printed, **fields)
    assert rec.response.status == DEVELOPER_ERROR
    assert rec.logs[:-1] == printed
    assert rec.logs[-1] == f"{ar.log_time(T0 + 12)} {WARNING}"


def test_the_warning_follows_the_truncation_notice_and_only_developer_errors_get_it() -> None:
    cut = record(logs=["a"], logs_truncated=True, timed_out=True, status=None, body=b"")
    assert [line[31:] for line in cut.logs[1:]] == [
        "stderr: Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes.",
        WARNING,
    ]
    assert record(logs=["a"]).logs == ["a"]
    assert record(logs=["a"], body=b'{"error": "nope"}').logs == ["a"]  # an application error


def test_log_time_is_iso_utc_padded_to_30() -> None:
    assert ar.log_time(T0) == "2023-11-14T22:13:20.000000Z".ljust(30)


# -- records of invocations that never ran -------------------------------------------------------------------


def test_failure_record_carries_the_error_and_path() -> None:
    rec = ar.failure_record(
        invocation=invocation(),
        name="hello",
        path="guest/hello",
        status=APPLICATION_ERROR,
        message=ar.ACTION_REMOVED,
        now=T0,
    )
    assert rec.response.result == {"error": "Action could not be found or may have been deleted."}
    assert (rec.start, rec.end, rec.duration) == (T0, T0, 0)
    assert notes(rec) == {"path": "guest/hello", "waitTime": 7}
    internal = ar.internal_error(invocation(), name="hello", path="guest/hello", message="x", now=T0)
    assert internal.response.status == INTERNAL_ERROR


@pytest.mark.parametrize(
    ("value", "truthy"),
    [(True, True), (False, False), ("", False), ("yes", True), (0, False), (2, True), (None, False)],
)
def test_annotation_truthiness_as_openwhisk_reads_it(value: Any, truthy: bool) -> None:
    assert params.annotation_truthy([KeyValue(key="k", value=value)], "k", absent=True) is truthy
    assert params.annotation_truthy([], "k", absent=True) is True
    assert params.annotation_truthy([], "k", absent=False) is False


def test_has_error_is_what_stops_a_sequence() -> None:
    assert ar.has_error(make_response(APPLICATION_ERROR, {"error": "x"}))
    assert not ar.has_error(make_response(SUCCESS, {"ok": 1}))
    assert not ar.has_error(make_response(SUCCESS, [{"error": 1}]))


# -- sequences ------------------------------------------------------------------------------------------------


def test_component_ids_are_derived_and_distinct() -> None:
    first, second = component_id(AID, 0), component_id(AID, 1)
    assert first == component_id(AID, 0) and first != second
    assert len(first) == 32 and set(first) <= set("0123456789abcdef")


def test_components_get_their_parameters_under_the_previous_result() -> None:
    resolved = ResolvedAction(
        action=action(parameters=[KeyValue(key="a", value=1), KeyValue(key="b", value=2)]),
        revision=1,
        parameters=[KeyValue(key="p", value=0), KeyValue(key="a", value=-1)],
        binding=None,
    )
    assert component_arguments(resolved, {"b": 3}) == {"p": 0, "a": 1, "b": 3}
    assert component_arguments(resolved, ["x"]) == ["x"]


def test_sequence_record_lists_components_and_marks_topmost() -> None:
    seq = action(name="seq", exec=Exec(kind="sequence", components=["/guest/a"]), limits=ActionLimits())
    rec = sequence_record(
        invocation=invocation(),
        sequence=seq,
        response=make_response(SUCCESS, {"r": 1}),
        component_ids=["a" * 32, "b" * 32],
        duration=9,
        max_memory=512,
        topmost=True,
        start=T0,
        end=T0 + 30,
    )
    assert rec.logs == ["a" * 32, "b" * 32]
    assert (rec.duration, rec.start, rec.end) == (9, T0, T0 + 30)
    assert notes(rec) == {
        "topmost": True,
        "path": "guest/seq",
        "kind": "sequence",
        "limits": {"timeout": 60000, "memory": 512, "logs": 10, "concurrency": 1},
    }
    inner = sequence_record(
        invocation=invocation(cause="c" * 32),
        sequence=seq,
        response=make_response(SUCCESS, {}),
        component_ids=[],
        duration=0,
        max_memory=None,
        topmost=False,
        start=T0,
        end=T0,
    )
    assert notes(inner) == {"topmost": False, "path": "guest/seq", "kind": "sequence", "causedBy": "sequence"}
    assert inner.cause == "c" * 32
    assert memory_of(rec) == 512 and memory_of(inner) is None
    assert annotation(rec, "kind") == "sequence"


def test_a_result_nested_too_deep_to_store_is_one_developer_error() -> None:
    from broker.limits import NESTING_MAX_DEPTH

    body = b"[" * (NESTING_MAX_DEPTH + 1) + b"]" * (NESTING_MAX_DEPTH + 1)
    response = ar.run_response(outcome(status=200, body=body))
    assert response.status == DEVELOPER_ERROR
    assert response.result == {
        "error": f"The action did not produce a valid JSON response. The JSON is nested more than {NESTING_MAX_DEPTH} levels deep."
    }
    far_too_deep = b"[" * 5000 + b"]" * 5000
    assert ar.run_response(outcome(status=200, body=far_too_deep)).status == DEVELOPER_ERROR
