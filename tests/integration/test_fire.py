"""Firing triggers end to end on real servers: API → TRIGGERS → rule engine → INVOKE → invoker → MongoDB.

The invoker runs a stand-in pool that echoes its arguments (the actions' code is not what is tested here;
tests/e2e covers real containers), so each rule-fired record shows exactly what its action received.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from broker import codec, subjects
from broker.activation_store import ActivationStore
from broker.activations import Activation, new_activation_id
from broker.bus import JetStreamBus, Outgoing
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import InternalError, NotFound
from broker.queues import EventQueues
from broker.recorder import ActivationRecorder
from broker.rule_engine import GAVE_UP, RuleEngine
from broker.topology import legacy_rule_engine
from broker.trigger_events import TriggerEvent, fire_id
from runtimes.invoker import InvokerAgent
from tests.conditions import eventually
from tests.integration.test_fuzz_api import EchoPool

CODE = {"exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"}}


@pytest.fixture
async def platform(
    app: Starlette,
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    settings: Settings,
) -> AsyncIterator[RuleEngine]:
    async with (
        InvokerAgent(bus, store, EchoPool()),
        InvokeGateway(bus) as gateway,
        RuleEngine(bus, store, settings) as engine,
        ActivationRecorder(bus, activation_store),
    ):
        app_state(app).gateway = gateway
        yield engine


async def eventually_record(
    activations: ActivationStore, namespace: str, aid: str, deadline_s: float = 15
) -> Activation:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await activations.get(namespace, aid)
        except NotFound:
            assert time.monotonic() < deadline, f"no record {aid} within {deadline_s} s"
            await asyncio.sleep(0.05)


async def setup(
    client: httpx.AsyncClient, trigger_params: list[dict[str, Any]] | None = None, rules: int = 1, **rule: Any
) -> None:
    ns = "_"
    trigger = {"parameters": trigger_params or []}
    assert (await client.put(f"/api/v1/namespaces/{ns}/triggers/t", json=trigger)).status_code == 200
    for i in range(rules):
        assert (await client.put(f"/api/v1/namespaces/{ns}/actions/a{i}", json=CODE)).status_code == 200
        body = {"trigger": "t", "action": f"a{i}", **rule}
        assert (await client.put(f"/api/v1/namespaces/{ns}/rules/r{i}", json=body)).status_code == 200


def lines(record: Activation) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.logs]


async def test_unknown_trigger_is_404_and_no_active_rule_is_204(
    ns_client: httpx.AsyncClient, platform: RuleEngine
) -> None:
    r = await ns_client.post("/api/v1/namespaces/_/triggers/nope", json={})
    assert r.status_code == 404 and r.json()["error"] == "The requested resource does not exist."
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    r = await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"a": 1})
    assert r.status_code == 204 and r.content == b""


async def test_fire_runs_each_rule_and_records_the_trigger(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client, [{"key": "p", "value": "trigger"}, {"key": "q", "value": "trigger"}], rules=2)
    r = await ns_client.post(
        "/api/v1/namespaces/_/triggers/t", json={"q": "payload"}, headers={"X-Custom": "v"}
    )
    assert r.status_code == 202
    aid = r.json()["activationId"]
    assert r.headers["x-openwhisk-activation-id"] == aid
    record = await eventually_record(activation_store, ns, aid)
    assert record.name == "t" and record.end == 0 and record.duration is None
    assert record.response.success and record.response.result == {"q": "payload"}
    logged = sorted(lines(record), key=lambda line: line["rule"])
    assert [(x["rule"], x["action"], x["statusCode"], x["success"]) for x in logged] == [
        (f"{ns}/r0", f"{ns}/a0", 0, True),
        (f"{ns}/r1", f"{ns}/a1", 0, True),
    ]
    for line in logged:
        run = await eventually_record(activation_store, ns, line["activationId"])
        assert run.cause == aid, "Squall links a rule-fired run to its trigger activation"
        result = run.response.result
        assert result["p"] == "trigger" and result["q"] == "payload", "trigger parameters < payload"
        assert result["__ow_headers"]["x-custom"] == "v"
        assert "authorization" not in result["__ow_headers"], "the caller's key never reaches actions"


async def test_a_repeated_idempotency_key_answers_the_first_id_and_creates_nothing(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client)
    ids = set()
    for _ in range(3):
        r = await ns_client.post(
            "/api/v1/namespaces/_/triggers/t", json={"n": 1}, headers={"Idempotency-Key": "k-1"}
        )
        assert r.status_code == 202
        ids.add(r.json()["activationId"])
    assert ids == {fire_id(ns, "t", "k-1")}
    record = await eventually_record(activation_store, ns, ids.pop())
    await eventually_record(activation_store, ns, lines(record)[0]["activationId"])
    deadline = time.monotonic() + 1.0  # give a duplicate every chance to show up
    while time.monotonic() < deadline:
        assert await activation_store.count(ns) == 2, "one trigger record and one action run, not more"
        await asyncio.sleep(0.1)


async def test_cloudevents_in_both_modes_reach_the_action(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client)
    structured = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/orders",
        "type": "order.created",
        "data": {"order": 7},
    }
    r = await ns_client.post(
        "/api/v1/namespaces/_/triggers/t",
        content=json.dumps(structured),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert r.status_code == 202
    first = r.json()["activationId"]
    binary_headers = {
        "ce-specversion": "1.0",
        "ce-id": "e-2",
        "ce-source": "/orders",
        "ce-type": "order.paid",
        "Content-Type": "application/json",
    }
    r = await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"order": 8}, headers=binary_headers)
    assert r.status_code == 202
    second = r.json()["activationId"]
    # The same CloudEvent (source + id) again is a repeat.
    again = await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"order": 8}, headers=binary_headers)
    assert again.json()["activationId"] == second
    for aid, order, kind in ((first, 7, "order.created"), (second, 8, "order.paid")):
        record = await eventually_record(activation_store, ns, aid)
        assert record.response.result == {"order": order}
        run = await eventually_record(activation_store, ns, lines(record)[0]["activationId"])
        assert run.response.result["order"] == order
        event = run.response.result["__ow_cloudevent"]
        assert event["type"] == kind and event["source"] == "/orders" and event["specversion"] == "1.0"


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"Content-Type": "application/cloudevents+json"}, b'{"specversion":"1.0","id":"x"}', "source, type"),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"0.3","id":"x","source":"s","type":"t"}',
            "0.3",
        ),
        ({"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s"}, b"{}", "type"),
        ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", "Batched"),
        ({}, b"[1]", "Object expected"),
        ({}, b"{", "not valid JSON"),
        ({"Idempotency-Key": "x" * 300}, b"{}", "Idempotency-Key"),
        ({"Squall-Hops": "-1"}, b"{}", "non-negative"),
    ],
)
async def test_malformed_fires_are_400_and_publish_nothing(
    ns_client: httpx.AsyncClient, platform: RuleEngine, headers: dict[str, str], body: bytes, message: str
) -> None:
    await setup(ns_client)
    before = platform.processed
    r = await ns_client.post("/api/v1/namespaces/_/triggers/t", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"] and set(r.json()) == {"error", "code"}
    await asyncio.sleep(0.2)
    assert platform.processed == before


async def test_a_filter_lets_only_matching_events_invoke(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client, filter={"data": {"severity": ["high", {"prefix": "crit"}]}})
    hit = (await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"severity": "critical"})).json()
    miss = (await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"severity": "low"})).json()
    hit_line = lines(await eventually_record(activation_store, ns, hit["activationId"]))[0]
    miss_line = lines(await eventually_record(activation_store, ns, miss["activationId"]))[0]
    assert "activationId" in hit_line
    await eventually_record(activation_store, ns, hit_line["activationId"])
    assert "activationId" not in miss_line and "filter" in miss_line["skipped"]
    assert await activation_store.count(ns) == 3


async def test_disabling_a_rule_takes_effect_at_once(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    await setup(ns_client)
    assert (await ns_client.post("/api/v1/namespaces/_/triggers/t", json={})).status_code == 202
    r = await ns_client.post("/api/v1/namespaces/_/rules/r0", json={"status": "inactive"})
    assert r.status_code == 200
    assert (await ns_client.post("/api/v1/namespaces/_/triggers/t", json={})).status_code == 204
    assert (
        await ns_client.post("/api/v1/namespaces/_/rules/r0", json={"status": "active"})
    ).status_code == 200
    assert (await ns_client.post("/api/v1/namespaces/_/triggers/t", json={})).status_code == 202


async def test_a_rule_whose_action_is_gone_is_logged_as_a_failed_rule(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client)
    assert (await ns_client.delete("/api/v1/namespaces/_/actions/a0")).status_code == 200
    aid = (await ns_client.post("/api/v1/namespaces/_/triggers/t", json={})).json()["activationId"]
    (line,) = lines(await eventually_record(activation_store, ns, aid))
    assert line == {
        "statusCode": 1,
        "success": False,
        "rule": f"{ns}/r0",
        "action": f"{ns}/a0",
        "error": "The requested resource does not exist.",
    }


async def test_too_many_hops_is_refused_and_recorded(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore, settings: Settings
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client)
    ok = await ns_client.post(
        "/api/v1/namespaces/_/triggers/t", json={}, headers={"Squall-Hops": str(settings.max_hops)}
    )
    assert ok.status_code == 202
    r = await ns_client.post(
        "/api/v1/namespaces/_/triggers/t",
        json={},
        headers={"Squall-Hops": str(settings.max_hops + 1), "Idempotency-Key": "loop"},
    )
    assert r.status_code == 400 and "loop" in r.json()["error"]
    refused = await eventually_record(activation_store, ns, fire_id(ns, "t", "loop"))
    assert not refused.response.success and "loop" in refused.response.result["error"]
    run_line = lines(await eventually_record(activation_store, ns, ok.json()["activationId"]))[0]
    run = await eventually_record(activation_store, ns, run_line["activationId"])
    assert run.cause == ok.json()["activationId"]


async def test_a_payload_near_the_1_mb_limit_is_accepted_and_reaches_the_action(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client)
    blob = "x" * (900 * 1024)
    r = await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"blob": blob})
    assert r.status_code == 202, r.text
    (line,) = lines(await eventually_record(activation_store, ns, r.json()["activationId"]))
    run = await eventually_record(activation_store, ns, line["activationId"])
    assert run.response.result["blob"] == blob
    too_big = await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"blob": "x" * (1024 * 1024)})
    assert too_big.status_code == 413 and set(too_big.json()) == {"error", "code"}


async def test_a_run_whose_arguments_outgrow_a_message_is_a_failed_rule_not_a_stuck_event(
    ns_client: httpx.AsyncClient, platform: RuleEngine, activation_store: ActivationStore
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await setup(ns_client)
    big_default = {**CODE, "parameters": [{"key": "defaults", "value": "y" * (600 * 1024)}]}
    assert (
        await ns_client.put("/api/v1/namespaces/_/actions/a0?overwrite=true", json=big_default)
    ).status_code == 200
    r = await ns_client.post("/api/v1/namespaces/_/triggers/t", json={"blob": "x" * (600 * 1024)})
    assert r.status_code == 202
    (line,) = lines(await eventually_record(activation_store, ns, r.json()["activationId"]))
    assert line["statusCode"] == 1 and "too large" in line["error"] and "activationId" not in line


def new_event(namespace: str) -> TriggerEvent:
    """An event of trigger `t`, as a fire publishes it."""
    return TriggerEvent(
        activationId=new_activation_id(),
        namespace=namespace,
        trigger="t",
        subject="s",
        published=int(time.time() * 1000),
    )


class BrokenEngine(RuleEngine):
    """An engine whose every attempt fails, as one would on an event it cannot handle."""

    async def plan(self, event: TriggerEvent, size: int | None = None) -> list[Outgoing]:
        raise InternalError("cannot plan this event")


async def test_an_event_that_keeps_failing_is_recorded_as_failed_after_its_deliveries(
    bus: JetStreamBus, store: EntityStore, activation_store: ActivationStore, settings: Settings
) -> None:
    namespace = f"poison-{uuid.uuid4().hex[:8]}"
    event = new_event(namespace)
    async with BrokenEngine(bus, store, settings), ActivationRecorder(bus, activation_store):
        await EventQueues(bus, settings).publish(event)
        record = await eventually_record(activation_store, namespace, event.activationId, deadline_s=30)
    assert record.response.status == "whisk internal error"
    assert record.response.result == {"error": f"{GAVE_UP} cannot plan this event"}


async def test_the_engine_consumer_of_an_earlier_version_is_read_until_drained_then_removed(
    bus: JetStreamBus, store: EntityStore, activation_store: ActivationStore, settings: Settings
) -> None:
    legacy = legacy_rule_engine(settings)
    await bus.provision_consumer(legacy)  # as an earlier version left it, with an event it never handled
    namespace = f"legacy-{uuid.uuid4().hex[:8]}"
    event = new_event(namespace)
    await bus.publish(
        subjects.trigger_subject(namespace, "t"), codec.encode(event), msg_id=event.activationId
    )
    async with RuleEngine(bus, store, settings), ActivationRecorder(bus, activation_store):
        record = await eventually_record(activation_store, namespace, event.activationId)

        async def removed() -> bool:
            try:
                await bus.consumer(legacy)
            except NotFound:
                return True
            return False

        await eventually(removed, 10, "the drained legacy consumer's removal")
    assert record.activationId == event.activationId
