"""Two `squall serve feeds` processes share the alarms: a one-second cron fires each instant exactly once,
through a SIGKILL of the process that owns it, until the feed's DELETE."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats.errors
import pytest
from nats.js import api

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from broker import subjects
from broker.activation_store import ActivationStore
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.feed_registry import FeedRegistry
from broker.namespaces import NamespaceLimits
from broker.trigger_events import fire_id
from feeds.alarm_scheduler import idempotency_key
from feeds.membership import Heartbeat, owner_of
from squall import roles
from tests.conditions import eventually
from tests.integration.broker_process import BrokerProcess, isolated_settings
from tests.integration.conftest import basic
from tests.integration.feeds_support import ensure_catalog

pytestmark = pytest.mark.timeout(120)


async def trigger_records(bus: JetStreamBus, namespace: str, trigger: str) -> list[dict[str, Any]]:
    """Every trigger activation record of `trigger` on ACTIVATIONS."""
    subject = subjects.activation_subject(namespace, trigger)
    config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE)
    sub = await bus.js.pull_subscribe(subject, stream=subjects.ACTIVATIONS_STREAM, config=config)
    found: list[dict[str, Any]] = []
    try:
        while True:
            try:
                batch = await sub.fetch(256, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            found.extend(json.loads(msg.data) for msg in batch)
    finally:
        await sub.unsubscribe()
    return found


async def members(bus: JetStreamBus) -> list[Heartbeat]:
    found = await bus.last_per_subject(
        f"KV_{subjects.FEEDS_MEMBERS_BUCKET}", f"$KV.{subjects.FEEDS_MEMBERS_BUCKET}.>"
    )
    return [msgspec.json.decode(msg.data, type=Heartbeat) for msg in found if msg.data]


@pytest.fixture
async def two_feeds(nats_url: str, mongo_uri: str, tmp_path: Path) -> AsyncIterator[list[BrokerProcess]]:
    settings = isolated_settings(nats_url, mongo_uri, tmp_path)
    env = {"SQUALL_FEEDS_MEMBER_TIMEOUT_S": "2", "SQUALL_FEEDS_STATUS_FLUSH_S": "1"}
    processes = [BrokerProcess(settings, tmp_path / f"feeds{i}.log", role="feeds", env=env) for i in range(2)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            await process.wait_running()
        yield processes
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
async def api_client(
    settings: Settings,
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """An API client of a fresh namespace with room for many fires, with the broker role (rule engine,
    recorder) running in this process."""
    name = f"alarms-{uuid.uuid4().hex[:8]}"
    key = await create_namespace(store, name, limits=NamespaceLimits(firesPerMinute=100_000))
    await ensure_catalog(store, settings)
    broker_settings = isolated_settings(settings.nats_url, settings.mongodb_uri, tmp_path)
    async with (
        roles.Backbone(broker_settings) as backbone,
        roles.broker_role(broker_settings, backbone),
        InvokeGateway(bus) as gateway,
    ):
        app = create_app(settings, store, activation_store, gateway=gateway)
        app_state(app).gateway = gateway
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key)) as c:
            c.namespace = name  # type: ignore[attr-defined]
            c.key = key  # type: ignore[attr-defined]
            yield c


async def test_each_instant_fires_once_through_a_sigkill_until_delete(
    two_feeds: list[BrokerProcess], api_client: httpx.AsyncClient, bus: JetStreamBus
) -> None:
    client = api_client
    namespace, key = client.namespace, client.key  # type: ignore[attr-defined]
    trigger = "every-second"
    for path, body in (
        ("actions/noop", {"exec": {"kind": "nodejs:18", "code": "function main(){}"}}),
        (f"triggers/{trigger}", {}),
        ("rules/tick", {"trigger": f"/_/{trigger}", "action": "/_/noop"}),
    ):
        response = await client.put(f"/api/v1/namespaces/_/{path}", json=body)
        assert response.status_code == 200, response.text

    async def call(event: str, **params: Any) -> dict[str, Any]:
        body = {"lifecycleEvent": event, "triggerName": f"/_/{trigger}", "authKey": key, **params}
        response = await client.post(
            "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true", json=body
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["response"]["result"])

    await call("CREATE", cron="* * * * * *", trigger_payload={"tick": True})
    registration, _ = await FeedRegistry(bus).get(namespace, trigger)

    def instant_of(records: list[dict[str, Any]]) -> dict[str, int]:
        """activation id -> the scheduled instant it is the fire of."""
        start = registration.created // 1000 * 1000
        ids = {
            fire_id(namespace, trigger, idempotency_key(registration, t)): t
            for t in range(start, int(time.time() * 1000) + 2000, 1000)
        }
        return {r["activationId"]: ids.get(r["activationId"], -1) for r in records}

    async def fired_after(moment: int) -> bool:
        found = instant_of(await trigger_records(bus, namespace, trigger)).values()
        return any(t >= moment for t in found)

    await eventually(lambda: fired_after(registration.created + 3000), 20, "three seconds of ticks")

    # Kill the process that owns the alarm, without warning.
    live = await members(bus)
    assert len(live) == 2
    owner = owner_of(subjects.entity_key(namespace, trigger), [m.id for m in live])
    victim = next(
        p for p in two_feeds if p.proc is not None and p.proc.pid in {m.pid for m in live if m.id == owner}
    )
    assert victim.proc is not None
    victim.proc.kill()
    victim.proc.wait(10)
    killed_at = int(time.time() * 1000)

    await eventually(lambda: fired_after(killed_at + 5000), 20, "ticks going on after the owner was killed")
    health = (await call("READ"))["status"]
    assert health["active"] is True
    assert health["fireCount"] > 0
    assert health["lastFire"] is not None and health["nextFire"] is not None

    await call("DELETE")
    deleted_at = int(time.time() * 1000)
    # "No more fires" has no condition to wait on: watch two and a half more ticks' worth of time.
    await asyncio.sleep(2.5)
    records = await trigger_records(bus, namespace, trigger)
    by_id = instant_of(records)
    instants = sorted(by_id.values())
    assert -1 not in instants, "a trigger record that is not the fire of a scheduled instant"
    assert len(records) == len(by_id), "an activation recorded twice"
    assert len(instants) == len(set(instants)), "an instant fired twice"
    assert instants == list(range(instants[0], instants[-1] + 1000, 1000)), "a gap in the ticks"
    assert instants[0] <= killed_at - 2000
    assert instants[-1] >= killed_at + 5000
    assert instants[-1] <= deleted_at + 1000, "fired after its DELETE"
    payloads = {json.dumps(r["response"]["result"]) for r in records}
    assert payloads == {json.dumps({"tick": True})}
