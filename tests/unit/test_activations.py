"""Activation records: ids, status codes, omitted fields, list summaries and the codec round trip."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from broker import codec
from broker.activation_store import from_document, list_filter, to_document
from broker.activations import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    INTERNAL_ERROR,
    STATUS_CODES,
    SUCCESS,
    Activation,
    ActivationSummary,
    entity_path,
    make_response,
    new_activation_id,
    status_code,
    summarize,
    validate_activation_id,
)
from broker.entities import KeyValue
from broker.errors import BadRequest, InternalError

START = 1_700_000_000_000


def action_record(**overrides: Any) -> Activation:
    fields: dict[str, Any] = {
        "namespace": "guest",
        "name": "hello",
        "subject": "guest",
        "activationId": "0123456789abcdef0123456789abcdef",
        "start": START,
        "end": START + 42,
        "duration": 42,
        "response": make_response(SUCCESS, {"greeting": "hi"}),
        "logs": ["2024-01-01T00:00:00.000000000Z stdout: hi"],
        "version": "0.0.1",
        "publish": False,
        "annotations": [KeyValue(key="path", value="guest/hello"), KeyValue(key="kind", value="python:3.11")],
    }
    fields.update(overrides)
    return Activation(**fields)


def trigger_record() -> Activation:
    return Activation(
        namespace="guest",
        name="tick",
        subject="guest",
        activationId=new_activation_id(),
        start=START,
        response=make_response(SUCCESS, {}),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=[],
    )


def test_new_activation_ids_are_32_lowercase_hex_and_distinct() -> None:
    ids = {new_activation_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert len(value) == 32
        assert set(value) <= set("0123456789abcdef")
        assert validate_activation_id(value) == value


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0123456789ABCDEF0123456789ABCDEF",  # uppercase
        "0123456789abcdef0123456789abcde",  # 31
        "0123456789abcdef0123456789abcdef0",  # 33
        "0123456789abcdef-123456789abcdef",
        "0123456789abcdef0123456789abcdeg",
        "01234567-89ab-cdef-0123-456789abcdef",  # a dashed UUID is not an activation id
        "0123456789abcdef0123456789abcdef\n",
    ],
)
def test_malformed_activation_ids_are_bad_requests(bad: str) -> None:
    with pytest.raises(BadRequest, match="activation id"):
        validate_activation_id(bad)


def test_status_codes_follow_openwhisk() -> None:
    assert [status_code(s) for s in (SUCCESS, APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR)] == [
        0,
        1,
        2,
        3,
    ]
    assert status_code("something else") == 3
    assert set(STATUS_CODES) == {
        "success",
        "application error",
        "action developer error",
        "whisk internal error",
    }


def test_response_success_agrees_with_status() -> None:
    assert make_response(SUCCESS).success is True
    assert make_response(APPLICATION_ERROR, {"error": "x"}).success is False
    with pytest.raises(ValueError, match="unknown activation status"):
        make_response("fine")


def test_action_record_wire_shape() -> None:
    wire = json.loads(codec.encode(action_record()))
    assert list(wire) == [
        "namespace", "name", "subject", "activationId", "start", "end", "duration",
        "response", "logs", "version", "publish", "annotations",
    ]  # fmt: skip
    assert wire["response"] == {"status": "success", "success": True, "result": {"greeting": "hi"}}
    assert wire["publish"] is False  # emitted although false
    assert wire["annotations"][0] == {"key": "path", "value": "guest/hello"}  # no `init` on annotations


def test_trigger_record_omits_end_duration_cause_but_keeps_logs() -> None:
    wire = json.loads(codec.encode(trigger_record()))
    assert "end" not in wire
    assert "duration" not in wire
    assert "cause" not in wire
    assert wire["logs"] == []
    assert wire["annotations"] == []
    assert wire["response"] == {"status": "success", "success": True, "result": {}}


def test_zero_duration_is_kept_and_size_appears_when_set() -> None:
    wire = json.loads(codec.encode(action_record(end=START, duration=0)))
    assert wire["duration"] == 0
    truncated = action_record(response=make_response(APPLICATION_ERROR, {"error": "big"}, size=2_000_000))
    assert json.loads(codec.encode(truncated))["response"]["size"] == 2_000_000


def test_codec_round_trip() -> None:
    record = action_record(cause="fedcba9876543210fedcba9876543210")
    assert codec.decode(codec.encode(record), Activation) == record
    trigger = trigger_record()
    assert codec.decode(codec.encode(trigger), Activation) == trigger


def test_decoder_skips_unknown_fields() -> None:
    wire = json.loads(codec.encode(action_record()))
    wire["futureField"] = {"x": 1}
    assert codec.decode(json.dumps(wire), Activation) == action_record()


def test_summary_of_ended_record() -> None:
    record = action_record(cause="fedcba9876543210fedcba9876543210")
    summary = summarize(record)
    wire = json.loads(codec.encode(summary))
    assert set(wire) == {
        "namespace", "name", "version", "publish", "annotations", "activationId", "start", "cause",
        "end", "duration", "statusCode",
    }  # fmt: skip
    assert (wire["end"], wire["duration"], wire["statusCode"]) == (START + 42, 42, 0)
    error = summarize(action_record(response=make_response(DEVELOPER_ERROR, {"error": "crash"})))
    assert error.statusCode == 2


def test_summary_derives_duration_when_missing() -> None:
    assert summarize(action_record(duration=None)).duration == 42


def test_summary_of_trigger_record_has_no_end_fields() -> None:
    wire = json.loads(codec.encode(summarize(trigger_record())))
    assert set(wire) == {"namespace", "name", "version", "publish", "annotations", "activationId", "start"}
    assert codec.decode(codec.encode(summarize(trigger_record())), ActivationSummary).statusCode is None


def test_entity_path_from_path_annotation() -> None:
    assert entity_path(action_record()) == "hello"
    packaged = action_record(annotations=[KeyValue(key="path", value="guest/utils/hello")])
    assert entity_path(packaged) == "utils/hello"
    assert entity_path(action_record(namespace="guest/utils", annotations=[])) == "utils/hello"
    assert entity_path(trigger_record()) == "tick"


def test_document_carries_internal_fields_and_decodes_without_them() -> None:
    record = action_record(annotations=[KeyValue(key="path", value="guest/utils/hello")])
    doc = to_document(record)
    assert doc["entityPath"] == "utils/hello"
    assert "expiresAt" not in doc  # retention is the upkeep's sweep on `start`, not a TTL deadline
    doc["_id"] = "mongo-id"
    assert from_document(doc) == record


def test_results_bson_cannot_hold_survive_the_document() -> None:
    record = action_record(annotations=[])
    odd = msgspec.structs.replace(
        record, response=make_response(SUCCESS, {"big": 2**70, "$where": 1, "a.b": [-(2**65)]})
    )
    assert from_document(to_document(odd)) == odd


def test_corrupt_document_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="corrupt activation record"):
        from_document({"activationId": "x", "start": "yesterday"})


def test_list_filter_bounds_are_inclusive_on_start() -> None:
    assert list_filter("guest") == {"namespace": {"$eq": "guest"}}
    assert list_filter("guest", name="utils/hello", since=1, upto=2) == {
        "namespace": {"$eq": "guest"},
        "entityPath": {"$eq": "utils/hello"},
        "start": {"$gte": 1, "$lte": 2},
    }
