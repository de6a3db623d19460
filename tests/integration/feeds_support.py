"""What the feed tests share: the catalog's feed actions (installed by the catalog's installer), a
platform with the feeds role in process, and lifecycle calls as a client makes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from api.throttling import UNTHROTTLED
from broker.activation_store import ActivationStore
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import NotFound
from broker.recorder import ActivationRecorder
from broker.rule_engine import RuleEngine
from feeds.service import FeedsRole
from runtimes.invoker import InvokerAgent
from squall.catalog import install_catalog
from tests.integration.test_fuzz_api import EchoPool

CODE = {"exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"}}


async def ensure_catalog(store: EntityStore, settings: Settings) -> None:
    """The whisk.system catalog with its feed actions, installed as `squall standalone` installs it."""
    await install_catalog(store, settings)


@pytest.fixture
async def feeds_platform(
    app: Starlette,
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    settings: Settings,
) -> AsyncIterator[FeedsRole]:
    """API gateway, rule engine, an invoker whose stand-in pool echoes its arguments, the recorder, and the
    feeds role."""
    await ensure_catalog(store, settings)
    async with (
        InvokerAgent(bus, store, EchoPool()),
        InvokeGateway(bus) as gateway,
        RuleEngine(bus, store, settings),
        ActivationRecorder(bus, activation_store),
        FeedsRole(settings, bus, store, UNTHROTTLED) as feeds,
    ):
        app_state(app).gateway = gateway
        yield feeds


async def lifecycle(
    client: httpx.AsyncClient, feed: str, event: str, key: str, trigger: str = "/_/t", **params: Any
) -> dict[str, Any]:
    """A blocking invoke of the catalog feed action `feed` ("webhooks/webhook"), as the openwhisk npm client's
    `feeds.create/get/update/delete` make it: its result."""
    body = {"lifecycleEvent": event, "triggerName": trigger, "authKey": key, **params}
    r = await client.post(
        f"/api/v1/namespaces/whisk.system/actions/{feed}?blocking=true&result=true", json=body
    )
    result: dict[str, Any] = r.json()
    return result


async def setup_trigger(client: httpx.AsyncClient, name: str = "t") -> None:
    """A trigger `name` with one active rule to an (echoing) action."""
    assert (await client.put(f"/api/v1/namespaces/_/triggers/{name}")).status_code == 200
    assert (await client.put(f"/api/v1/namespaces/_/actions/echo-{name}", json=CODE)).status_code == 200
    rule = {"trigger": name, "action": f"echo-{name}"}
    assert (await client.put(f"/api/v1/namespaces/_/rules/r-{name}", json=rule)).status_code == 200


async def record_of(
    activations: ActivationStore, namespace: str, aid: str, deadline_s: float = 15
) -> Activation:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await activations.get(namespace, aid)
        except NotFound:
            assert time.monotonic() < deadline, f"no record {aid} within {deadline_s} s"
            await asyncio.sleep(0.05)


async def trigger_records(activations: ActivationStore, namespace: str, trigger: str) -> list[Activation]:
    return await activations.list(namespace, name=trigger, limit=0)
