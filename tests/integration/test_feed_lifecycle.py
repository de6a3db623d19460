"""The feed lifecycle through the REST API, on real servers: a catalog feed action's blocking invoke reaches the
feeds role over NATS, which checks the key, keeps the registration in KV and records the call as an activation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from broker.activation_store import ActivationStore
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entities import ACTIONS, PACKAGES, Action, Exec, KeyValue, Package
from broker.entity_store import EntityStore
from broker.errors import BadRequest, Conflict
from broker.feed_registry import FEED_PROVIDER_ANNOTATION, FeedRegistration, FeedRegistry, FeedStatus
from broker.recorder import ActivationRecorder
from feeds.lifecycle import FeedLifecycle
from tests.integration.test_fire import eventually_record

FEED = "/api/v1/namespaces/whisk.system/actions/lifecycletest/tick"


class TickProvider:
    """A provider for this test only: `every` (seconds, > 0) is its whole configuration."""

    name = "tick"

    def configure(
        self, params: Mapping[str, Any], previous: Mapping[str, Any] | None, now_ms: int
    ) -> dict[str, Any]:
        every = params.get("every", (previous or {}).get("every"))
        if not isinstance(every, int) or every <= 0:
            raise BadRequest("The parameter 'every' must be a positive integer.")
        return {"every": every}

    def answer(self, registration: FeedRegistration) -> dict[str, Any]:
        return {"url": f"tick://{registration.namespace}/{registration.trigger}"}


async def ensure_feed_action(store: EntityStore, system: str) -> None:
    """The system namespace's published package `lifecycletest` with the feed action `tick` (once per run)."""
    with contextlib.suppress(Conflict):
        await store.create(PACKAGES, Package(namespace=system, name="lifecycletest", publish=True))
    action = Action(
        namespace=f"{system}/lifecycletest",
        name="tick",
        exec=Exec(kind="nodejs:18", code="function main() { return {error: 'served by the feeds role'} }"),
        annotations=[KeyValue(key="feed", value=True), KeyValue(key=FEED_PROVIDER_ANNOTATION, value="tick")],
    )
    with contextlib.suppress(Conflict):
        await store.create(ACTIONS, action)


@pytest.fixture
async def feeds(
    app: Starlette,
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    settings: Settings,
) -> AsyncIterator[FeedLifecycle]:
    await ensure_feed_action(store, settings.system_namespace)
    async with (
        InvokeGateway(bus) as gateway,
        ActivationRecorder(bus, activation_store),
        FeedLifecycle(
            bus, store, {"tick": TickProvider()}, system_namespace=settings.system_namespace
        ) as lifecycle,
    ):
        app_state(app).gateway = gateway
        yield lifecycle


async def call(client: httpx.AsyncClient, key: str, event: str, **params: Any) -> httpx.Response:
    body = {"lifecycleEvent": event, "triggerName": "/_/t", "authKey": key, **params}
    return await client.post(FEED, params={"blocking": "true"}, json=body)


async def test_create_read_update_pause_delete(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds: FeedLifecycle,
    bus: JetStreamBus,
    activation_store: ActivationStore,
) -> None:
    ns, key = namespace
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200

    created = await call(ns_client, key, "CREATE", every=5)
    assert created.status_code == 200, created.text
    record = created.json()
    assert record["response"]["result"] == {"url": f"tick://{ns}/t"}
    assert record["namespace"] == ns and record["name"] == "tick"
    annotations = {a["key"]: a["value"] for a in record["annotations"]}
    assert annotations["path"] == "whisk.system/lifecycletest/tick"
    stored = await eventually_record(activation_store, ns, record["activationId"])
    assert stored.response.success, "each lifecycle call leaves a normal activation record"

    registration, _ = await FeedRegistry(bus).get(ns, "t")
    assert (registration.feed, registration.provider, registration.config) == (
        "/whisk.system/lifecycletest/tick",
        "tick",
        {"every": 5},
    )
    assert (await call(ns_client, key, "CREATE", every=5)).status_code == 502, "one feed per trigger"

    await FeedRegistry(bus).put_status(ns, "t", FeedStatus(lastFire=1, nextFire=2, fireCount=3))
    read = (await call(ns_client, key, "READ")).json()["response"]["result"]
    assert read["config"] == {"name": "t", "namespace": ns, "every": 5, "url": f"tick://{ns}/t"}
    status = read["status"]
    assert (status["active"], status["lastFire"], status["nextFire"], status["fireCount"]) == (True, 1, 2, 3)

    assert (await call(ns_client, key, "UPDATE", every=7)).status_code == 200
    assert (await FeedRegistry(bus).get(ns, "t"))[0].config == {"every": 7}

    assert (await call(ns_client, key, "PAUSE")).status_code == 200
    listed = (await ns_client.get("/api/v1/namespaces/_/feeds")).json()
    assert [(f["trigger"], f["status"]["active"], f["status"]["nextFire"]) for f in listed] == [
        (f"/{ns}/t", False, None)
    ]
    assert listed[0]["status"]["reason"]["kind"] == "PAUSED"
    assert (await call(ns_client, key, "UNPAUSE")).status_code == 200
    assert (await FeedRegistry(bus).get(ns, "t"))[0].active

    assert (await call(ns_client, key, "DELETE")).status_code == 200
    assert (await ns_client.get("/api/v1/namespaces/_/feeds")).json() == []
    gone = await call(ns_client, key, "DELETE")
    assert gone.status_code == 502 and gone.json()["response"]["result"]["statusCode"] == 404


async def test_a_key_that_does_not_own_the_trigger_registers_nothing(
    ns_client: httpx.AsyncClient, store: EntityStore, feeds: FeedLifecycle, bus: JetStreamBus
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    other_key = await create_namespace(store, f"{ns}-other")
    body = {"lifecycleEvent": "CREATE", "triggerName": f"/{ns}/t", "authKey": other_key, "every": 1}
    refused = await ns_client.post(FEED, params={"blocking": "true"}, json=body)
    assert refused.status_code == 502
    assert refused.json()["response"]["result"]["statusCode"] == 403
    bad_key = {**body, "authKey": other_key[:-1] + "x"}
    refused = await ns_client.post(FEED, params={"blocking": "true"}, json=bad_key)
    assert refused.json()["response"]["result"]["statusCode"] == 403
    assert await FeedRegistry(bus).list(ns) == []


async def test_invalid_parameters_and_events_are_refused_with_the_providers_message(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds: FeedLifecycle
) -> None:
    _, key = namespace
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    bad = await call(ns_client, key, "CREATE", every=0)
    assert bad.json()["response"]["result"] == {
        "error": "The parameter 'every' must be a positive integer.",
        "statusCode": 400,
    }
    odd = await call(ns_client, key, "RESTART")
    assert "lifecycleEvent" in odd.json()["response"]["result"]["error"]
    missing = await ns_client.post(
        FEED, params={"blocking": "true"}, json={"lifecycleEvent": "CREATE", "authKey": key, "every": 1}
    )
    assert "triggerName" in missing.json()["response"]["result"]["error"]


async def test_deleting_the_trigger_deletes_its_feed(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds: FeedLifecycle, bus: JetStreamBus
) -> None:
    ns, key = namespace
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    assert (await call(ns_client, key, "CREATE", every=5)).status_code == 200
    assert (await ns_client.delete("/api/v1/namespaces/_/triggers/t")).status_code == 200
    assert await FeedRegistry(bus).list(ns) == []


async def test_without_a_feeds_process_the_call_is_503(
    app: Starlette,
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    bus: JetStreamBus,
    store: EntityStore,
    settings: Settings,
) -> None:
    await ensure_feed_action(store, settings.system_namespace)
    async with InvokeGateway(bus) as gateway:
        app_state(app).gateway = gateway
        assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
        refused = await call(ns_client, namespace[1], "CREATE", every=5)
    assert refused.status_code == 503
    assert "feeds" in refused.json()["error"]


async def test_only_the_system_namespace_makes_feed_actions(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds: FeedLifecycle, bus: JetStreamBus
) -> None:
    """A user's own action annotated as a feed is an ordinary action: it never reaches the feeds role."""
    ns, key = namespace
    action = {
        "exec": {"kind": "nodejs:default", "code": "function main() { return {} }"},
        "annotations": [{"key": FEED_PROVIDER_ANNOTATION, "value": "tick"}],
    }
    assert (await ns_client.put("/api/v1/namespaces/_/actions/fake", json=action)).status_code == 200
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    body = {"lifecycleEvent": "CREATE", "triggerName": "/_/t", "authKey": key, "every": 1}
    answer = await ns_client.post("/api/v1/namespaces/_/actions/fake", params={"blocking": "true"}, json=body)
    assert answer.status_code == 503, "an ordinary action waits for an invoker, and this test runs none"
    assert await FeedRegistry(bus).list(ns) == []
