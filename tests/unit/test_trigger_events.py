"""Derived ids, the filter document, trigger records and rule log lines: the pure parts of firing."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from broker.action_refs import ResolvedAction, action_arguments
from broker.activations import APPLICATION_ERROR, make_response
from broker.entities import Action, Exec, KeyValue
from broker.errors import BadRequest
from broker.rule_engine import CODE_CLIENT, rule_log
from broker.trigger_events import (
    TriggerEvent,
    attempt_activation_id,
    event_arguments,
    filter_document,
    fire_id,
    rule_activation_id,
    trigger_record,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_derived_ids_are_stable_distinct_and_shaped_like_openwhisk_ids() -> None:
    ids = {
        fire_id("ns", "t", "k"),
        fire_id("ns", "t", "k2"),
        fire_id("ns", "t2", "k"),
        fire_id("ns2", "t", "k"),
        rule_activation_id("a" * 32, "ns/r1"),
        rule_activation_id("a" * 32, "ns/r2"),
        rule_activation_id("b" * 32, "ns/r1"),
        attempt_activation_id("a" * 32, 2),
        attempt_activation_id("a" * 32, 3),
    }
    assert len(ids) == 9 and all(HEX32.fullmatch(i) for i in ids)
    assert fire_id("ns", "t", "k") == fire_id("ns", "t", "k")
    assert attempt_activation_id("c" * 32, 1) == "c" * 32, "the first attempt keeps its id"
    # Parts are separated, so shifting text between them cannot collide.
    assert fire_id("n", "st", "k") != fire_id("ns", "t", "k")


def test_the_filter_document_is_the_event_in_cloudevents_form() -> None:
    assert filter_document({"a": 1}, None) == {"data": {"a": 1}}
    attributes = {"type": "t", "source": "s", "data": "not this one"}
    assert filter_document({"a": 1}, attributes) == {"type": "t", "source": "s", "data": {"a": 1}}


def test_a_trigger_record_is_openwhisks_shape() -> None:
    event = TriggerEvent(
        activationId="a" * 32, namespace="ns", trigger="t", subject="u", payload={"x": 1}, published=5
    )
    record = trigger_record(event, "0.0.3", ["line"])
    assert (record.name, record.start, record.end, record.duration, record.version) == (
        "t",
        5,
        0,
        None,
        "0.0.3",
    )
    assert record.response.success and record.response.result == {"x": 1}
    assert record.annotations == [] and record.cause is None
    hopped = trigger_record(
        TriggerEvent(activationId="a" * 32, namespace="ns", trigger="t", subject="u", hops=3),
        "0.0.1",
        [],
        make_response(APPLICATION_ERROR, {"error": "no"}),
    )
    assert hopped.annotations == [KeyValue(key="hops", value=3)] and not hopped.response.success


def test_rule_log_lines_are_json_strings_in_openwhisks_field_order() -> None:
    ok = rule_log("ns/r", "ns/a", activation_id="f" * 32)
    assert (
        ok
        == '{"statusCode":0,"success":true,"activationId":"' + "f" * 32 + '","rule":"ns/r","action":"ns/a"}'
    )
    failed = json.loads(rule_log("ns/r", "ns/a", code=CODE_CLIENT, error="gone"))
    assert failed == {"statusCode": 1, "success": False, "rule": "ns/r", "action": "ns/a", "error": "gone"}


def test_action_arguments_merge_package_action_and_event_with_final() -> None:
    action = Action(
        namespace="ns/pkg",
        name="a",
        exec=Exec(kind="python:3.11", code="x"),
        parameters=[KeyValue(key="p", value="action"), KeyValue(key="fixed", value=1)],
        annotations=[KeyValue(key="final", value=True)],
    )
    resolved = ResolvedAction(
        action=action,
        revision=1,
        parameters=[KeyValue(key="p", value="pkg"), KeyValue(key="q", value="pkg")],
        binding=None,
    )
    assert action_arguments(resolved.action, resolved.parameters, {"e": 1}) == {
        "p": "action",
        "fixed": 1,
        "q": "pkg",
        "e": 1,
    }
    with pytest.raises(BadRequest):
        action_arguments(
            resolved.action, resolved.parameters, {"fixed": 2}
        )  # a final parameter cannot be overridden by the event


def test_event_arguments_are_parameters_under_the_payload_with_headers_and_cloudevent() -> None:
    plain = TriggerEvent(
        activationId="a" * 32,
        namespace="ns",
        trigger="t",
        subject="u",
        payload={"p": "payload", "x": 1},
        parameters={"p": "trigger", "q": 2},
        headers={"x-h": "v"},
    )
    assert event_arguments(plain) == {"p": "payload", "q": 2, "x": 1, "__ow_headers": {"x-h": "v"}}
    cloud = msgspec.structs.replace(plain, cloudevent={"type": "t"})
    assert event_arguments(cloud)["__ow_cloudevent"] == {"type": "t"}
