"""A blocking invoke answers as OpenWhisk's controller does: bare arrays, the result alone, no logs."""

from __future__ import annotations

from typing import Any

import msgspec

from api.blocking_answer import blocking_body
from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, make_response
from broker.entities import KeyValue


def record(result: Any, status: str = SUCCESS, logs: list[str] | None = None) -> Activation:
    return Activation(
        namespace="guest",
        name="a",
        subject="s",
        activationId="0" * 32,
        start=1,
        end=2,
        duration=1,
        response=make_response(status, result),
        logs=["2026-01-01T00:00:00.000000Z    stdout: hi"] if logs is None else logs,
        version="0.0.1",
        publish=False,
        annotations=[],
    )


def test_an_array_result_is_answered_bare_with_or_without_result_true() -> None:
    rec = record([1, {"two": 2}])
    assert blocking_body(rec, result_only=False) == [1, {"two": 2}]
    assert blocking_body(rec, result_only=True) == [1, {"two": 2}]
    assert blocking_body(record([]), result_only=False) == []


def test_the_record_is_answered_without_its_logs() -> None:
    rec = record({"ok": True})
    body = blocking_body(rec, result_only=False)
    assert isinstance(body, Activation) and body.logs == []
    assert body.response == rec.response and body.activationId == rec.activationId
    failed = record({"error": "nope"}, APPLICATION_ERROR)
    assert blocking_body(failed, result_only=False).logs == []


def test_result_true_answers_the_result_or_an_empty_object() -> None:
    assert blocking_body(record({"ok": True}), result_only=True) == {"ok": True}
    assert blocking_body(record(None), result_only=True) == {}


def test_a_sequence_keeps_its_component_ids() -> None:
    seq = msgspec.structs.replace(
        record({"n": 1}, logs=["a" * 32, "b" * 32]), annotations=[KeyValue(key="kind", value="sequence")]
    )
    assert blocking_body(seq, result_only=False).logs == ["a" * 32, "b" * 32]
