"""Entitlements checked when a run runs, throttles charged to the caller, and callers' keys kept from other
namespaces' code, on real servers: two namespaces, the API, the rule engine, an invoker with a stand-in pool
(tests/integration/test_invoker_fake_pool.py's) and the recorder.

`pub` publishes a package `lib` with an action `act`; `caller` uses it through rules, sequences, invokes, a
binding, a queued run and a redriven dead letter, and `pub` unpublishes it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from broker import codec, subjects
from broker.activation_store import ActivationStore
from broker.activations import Activation, new_activation_id
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.config import Settings
from broker.dead_letters import DeadLetters, dead_letter
from broker.entity_store import EntityStore
from broker.errors import Forbidden
from broker.invocations import Invocation
from broker.namespaces import NamespaceLimits
from broker.queues import InvokeQueues, subject_of
from broker.recorder import ActivationRecorder
from broker.rule_engine import RuleEngine
from broker.throttles import Throttles
from runtimes import activation_result as results
from runtimes.invoker import InvokerAgent
from tests.conditions import eventually
from tests.integration.conftest import basic
from tests.integration.test_fire import eventually_record
from tests.integration.test_invoker_fake_pool import FakePool

NOT_AUTHORIZED = Forbidden.default_message


class Tenants(msgspec.Struct, kw_only=True):
    pub: str
    caller: str
    caller_key: str
    pub_client: Any
    caller_client: Any
    pool: Any


@pytest.fixture
async def t(
    app: Starlette,
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    settings: Settings,
) -> AsyncIterator[Tenants]:
    suffix = uuid.uuid4().hex[:8]
    pub, caller = f"pub-{suffix}", f"caller-{suffix}"
    pub_key = await create_namespace(store, pub)
    caller_key = await create_namespace(store, caller, limits=NamespaceLimits(concurrentInvocations=1))
    bucket = f"invokers_{suffix}"
    pool = FakePool("solo")
    async with (
        Throttles(bus, store, settings, in_flight_ttl_s=0.05) as throttles,
        InvokerAgent(bus, store, pool, health_bucket=bucket),
        InvokeGateway(bus, health_bucket=bucket, store_poll_s=0.5) as gateway,
        RuleEngine(bus, store, settings),
        ActivationRecorder(bus, activation_store),
    ):
        app_state(app).gateway = gateway
        app_state(app).throttles = throttles
        await eventually(gateway.registry.any_healthy, what="the invoker's heartbeat")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(pub_key)) as p,
            httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(caller_key)) as c,
        ):
            yield Tenants(
                pub=pub, caller=caller, caller_key=caller_key, pub_client=p, caller_client=c, pool=pool
            )


async def ok(response: Any) -> Any:
    r = await response
    assert r.status_code in (200, 202), r.text
    return r.json() if r.content else None


async def publish_lib(t: Tenants, publish: bool = True, code: str = "echo", **action: Any) -> None:
    await ok(t.pub_client.put("/api/v1/namespaces/_/packages/lib?overwrite=true", json={"publish": publish}))
    body = {"exec": {"kind": "python:default", "code": code}, **action}
    await ok(t.pub_client.put("/api/v1/namespaces/_/actions/lib/act?overwrite=true", json=body))


async def unpublish_lib(t: Tenants) -> None:
    await ok(t.pub_client.put("/api/v1/namespaces/_/packages/lib?overwrite=true", json={"publish": False}))


def rule_lines(record: Activation) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.logs]


async def fire(t: Tenants, activations: ActivationStore) -> dict[str, Any]:
    r = await t.caller_client.post("/api/v1/namespaces/_/triggers/t", json={"x": 1})
    assert r.status_code == 202, r.text
    record = await eventually_record(activations, t.caller, r.json()["activationId"])
    (line,) = rule_lines(record)
    return line


async def test_a_rule_may_not_name_another_namespaces_binding_even_a_published_one(t: Tenants) -> None:
    await publish_lib(t)
    shared = {"binding": {"namespace": t.pub, "name": "lib"}, "publish": True}
    await ok(t.pub_client.put("/api/v1/namespaces/_/packages/theirs", json=shared))
    await ok(t.caller_client.put("/api/v1/namespaces/_/triggers/t", json={}))
    r = await t.caller_client.put(
        "/api/v1/namespaces/_/rules/r", json={"trigger": "t", "action": f"/{t.pub}/theirs/act"}
    )
    assert r.status_code == 403, r.text
    assert (
        r.json()["error"] == f"The supplied authentication is not authorized to access '{t.pub}/theirs/act'."
    )
    # The same action reached through the published package itself, or a binding of one's own, is fine ...
    await ok(
        t.caller_client.put(
            "/api/v1/namespaces/_/rules/r", json={"trigger": "t", "action": f"/{t.pub}/lib/act"}
        )
    )
    mine = {"binding": {"namespace": t.pub, "name": "lib"}}
    await ok(t.caller_client.put("/api/v1/namespaces/_/packages/mine", json=mine))
    body = {"trigger": "t", "action": "mine/act"}
    await ok(t.caller_client.put("/api/v1/namespaces/_/rules/r2", json=body))
    # ... until the package is unpublished: an update naming it through the binding is refused then.
    await unpublish_lib(t)
    r = await t.caller_client.put("/api/v1/namespaces/_/rules/r2?overwrite=true", json=body)
    assert r.status_code == 403, r.text


async def test_a_rule_run_is_refused_once_the_package_is_unpublished(
    t: Tenants, activation_store: ActivationStore
) -> None:
    await publish_lib(t)
    await ok(t.caller_client.put("/api/v1/namespaces/_/triggers/t", json={}))
    mine = {"binding": {"namespace": t.pub, "name": "lib"}}
    await ok(t.caller_client.put("/api/v1/namespaces/_/packages/mine", json=mine))
    await ok(t.caller_client.put("/api/v1/namespaces/_/rules/r", json={"trigger": "t", "action": "mine/act"}))
    line = await fire(t, activation_store)
    assert line["success"], line
    run = await eventually_record(activation_store, t.caller, line["activationId"])
    assert run.response.success and run.namespace == t.caller
    await unpublish_lib(t)
    line = await fire(t, activation_store)
    assert (line["success"], line["statusCode"], line["error"]) == (False, 1, NOT_AUTHORIZED)
    assert "activationId" not in line


async def test_a_queued_run_and_a_redriven_dead_letter_are_checked_when_they_run(
    t: Tenants, bus: JetStreamBus, activation_store: ActivationStore
) -> None:
    await publish_lib(t, publish=False)
    # A run of the caller's admitted while the package was published, taken by an invoker after it was not.
    invocation = Invocation(
        activationId=new_activation_id(),
        namespace=t.caller,
        action=f"{t.pub}/lib/act",
        params={"x": 1},
        published=now_ms(),
    )
    await InvokeQueues(bus, bus.settings).ensure(t.caller)
    await bus.publish(subject_of(invocation), codec.encode(invocation), msg_id=invocation.activationId)
    record = await eventually_record(activation_store, t.caller, invocation.activationId)
    assert record.response.status == "application error"
    assert record.response.result == {"error": NOT_AUTHORIZED}
    assert not t.pool.ran(t.caller), "the refused action never reached a container"
    # A dead letter of such a run, redriven after the package was unpublished.
    failed = results.failure_record(
        invocation=invocation,
        name="act",
        path=invocation.action,
        status="application error",
        message="boom",
        now=now_ms(),
    )
    letter = dead_letter(
        msgspec.structs.replace(invocation, activationId=new_activation_id()), failed, 1, now_ms()
    )
    await DeadLetters(bus).publish(letter)
    r = await t.caller_client.post(f"/api/v1/namespaces/_/deadletters/{letter.id}/redrive")
    assert r.status_code == 202, r.text
    redriven = await eventually_record(activation_store, t.caller, r.json()["activationId"])
    assert redriven.response.result == {"error": NOT_AUTHORIZED}
    assert not t.pool.ran(t.caller)


async def test_a_sequence_stops_at_a_component_unpublished_since_it_was_made(
    t: Tenants, activation_store: ActivationStore
) -> None:
    await publish_lib(t)
    sequence = {"exec": {"kind": "sequence", "components": [f"/{t.pub}/lib/act"]}}
    await ok(t.caller_client.put("/api/v1/namespaces/_/actions/seq", json=sequence))
    r = await t.caller_client.post("/api/v1/namespaces/_/actions/seq?blocking=true", json={"x": 1})
    assert r.status_code == 200 and r.json()["response"]["result"]["x"] == 1, r.text
    await unpublish_lib(t)
    r = await t.caller_client.post("/api/v1/namespaces/_/actions/seq?blocking=true", json={"x": 1})
    assert r.status_code == 502, r.text
    assert r.json()["response"]["status"] == "application error"
    assert r.json()["response"]["result"] == {"error": NOT_AUTHORIZED}
    assert r.json()["logs"] == [], "the component never ran"


async def test_invoking_a_shared_action_counts_against_the_callers_concurrency_not_the_owners(
    t: Tenants, bus: JetStreamBus
) -> None:
    await publish_lib(t, code="sleep:1500")
    path = f"/api/v1/namespaces/{t.pub}/actions/lib/act"
    first = await t.caller_client.post(path, json={})
    assert first.status_code == 202, first.text
    # The run waits in the caller's queue on INVOKE, where the caller's concurrentInvocations holds it.
    held, _ = await bus.count(subjects.INVOKE_STREAM, subjects.invoke_filter(t.caller))
    assert held == 1
    owners, _ = await bus.count(subjects.INVOKE_STREAM, subjects.invoke_filter(t.pub))
    assert owners == 0
    second = await t.caller_client.post(path, json={})
    assert second.status_code == 429, second.text
    assert second.json()["error"] == "Too many concurrent requests in flight (count: 1, allowed: 1)."
    # The owner's own invokes are not held back by its caller's runs.
    for _ in range(3):
        r = await t.pub_client.post("/api/v1/namespaces/_/actions/lib/act", json={})
        assert r.status_code == 202, r.text


async def test_the_callers_key_reaches_its_own_code_only(t: Tenants) -> None:
    asks = {"annotations": [{"key": "provide-api-key", "value": True}]}
    await publish_lib(t, **asks)
    body = {"exec": {"kind": "python:default", "code": "echo"}, **asks}
    await ok(t.caller_client.put("/api/v1/namespaces/_/actions/own", json=body))
    sequence = {"exec": {"kind": "sequence", "components": [f"/{t.pub}/lib/act", f"/{t.caller}/own"]}}
    await ok(t.caller_client.put("/api/v1/namespaces/_/actions/seq", json=sequence))
    r = await t.caller_client.post(f"/api/v1/namespaces/{t.pub}/actions/lib/act?blocking=true", json={})
    assert r.status_code == 200, r.text
    r = await t.caller_client.post("/api/v1/namespaces/_/actions/seq?blocking=true", json={})
    assert r.status_code == 200, r.text
    runs = {
        (req.run.action_name, req.run.activation_id): req
        for req in t.pool.runs
        if req.run.namespace == t.caller
    }
    shared = [req for (name, _), req in runs.items() if name == f"/{t.pub}/lib/act"]
    own = [req for (name, _), req in runs.items() if name == f"/{t.caller}/own"]
    assert len(shared) == 2 and len(own) == 1
    for req in shared:
        assert req.run.api_key is None and "__OW_API_KEY" not in req.init.env
    # The sequence carried the key, sealed, to its own component, which asked for it.
    (mine,) = own
    assert mine.run.api_key == t.caller_key and mine.init.env["__OW_API_KEY"] == t.caller_key
