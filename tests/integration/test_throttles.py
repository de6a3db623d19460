"""Namespace throttles against the real bus: rates per minute, activations in flight from the INVOKE stream,
the 429s of the invoke route, and standalone's unthrottled guest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from broker import subjects
from broker.activation_store import ActivationStore
from broker.admin import create_namespace, ensure_namespace
from broker.bus import JetStreamBus
from broker.codec import encode
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import Throttled
from broker.namespaces import Namespace, NamespaceLimits
from broker.subjects import invoke_filter
from broker.throttles import Throttles
from runtimes.contract import RunOutcome, RunRequest
from runtimes.invoker import InvokerAgent
from squall.standalone import GUEST_LIMITS
from tests.integration.conftest import basic

# A fixed clock: the minute never turns in the middle of a test.
FIXED = 1_800_000_000.0


def fixed_clock() -> float:
    return FIXED


async def new_namespace(store: EntityStore, **limits: int) -> tuple[str, str]:
    name = f"ns-{uuid.uuid4().hex[:10]}"
    return name, await create_namespace(store, name, limits=NamespaceLimits(**limits))


async def refusal(throttles: Throttles, namespace: str) -> str | None:
    """`check_invoke`'s 429 message, or None when it admits."""
    try:
        await throttles.check_invoke(namespace)
    except Throttled as exc:
        return exc.message
    return None


@pytest.fixture
async def throttles(bus: JetStreamBus, store: EntityStore, settings: Settings) -> AsyncIterator[Throttles]:
    async with Throttles(bus, store, settings, clock=fixed_clock, in_flight_ttl_s=0.05) as throttles:
        yield throttles


async def test_the_third_invocation_past_a_limit_of_two_is_429(
    throttles: Throttles, store: EntityStore
) -> None:
    ns, _ = await new_namespace(store, invocationsPerMinute=2)
    await throttles.check_invoke(ns)
    await throttles.check_invoke(ns)
    with pytest.raises(Throttled) as raised:
        await throttles.check_invoke(ns)
    assert raised.value.message == "Too many requests in the last minute (count: 3, allowed: 2)."
    # Refused ones count too, as in OpenWhisk.
    assert await refusal(throttles, ns) == "Too many requests in the last minute (count: 4, allowed: 2)."


async def test_fires_count_apart_from_invocations(throttles: Throttles, store: EntityStore) -> None:
    ns, _ = await new_namespace(store, firesPerMinute=1, invocationsPerMinute=1)
    await throttles.check_fire(ns)
    with pytest.raises(Throttled) as raised:
        await throttles.check_fire(ns)
    assert raised.value.message == "Too many requests in the last minute (count: 2, allowed: 1)."
    assert await refusal(throttles, ns) is None


async def test_namespaces_count_apart_and_default_to_the_settings(
    bus: JetStreamBus, store: EntityStore, settings: Settings
) -> None:
    few = msgspec.structs.replace(settings, invocations_per_minute=1)
    async with Throttles(bus, store, few, clock=fixed_clock) as throttles:
        first, _ = await new_namespace(store)
        second, _ = await new_namespace(store)
        await throttles.check_invoke(first)
        await throttles.check_invoke(second)
        with pytest.raises(Throttled, match=r"\(count: 2, allowed: 1\)\.$"):
            await throttles.check_invoke(first)
        # A name without a record (a key imported by hand) gets the system values too.
        nameless = f"ns-{uuid.uuid4().hex[:10]}"
        assert await refusal(throttles, nameless) is None
        assert await refusal(throttles, nameless) is not None


async def test_a_changed_limit_applies_at_once(throttles: Throttles, store: EntityStore) -> None:
    ns, _ = await new_namespace(store, invocationsPerMinute=1)
    await throttles.check_invoke(ns)
    assert await refusal(throttles, ns) is not None  # count 2: cached limits say 1
    await store.put_namespace(Namespace(name=ns, limits=NamespaceLimits(invocationsPerMinute=10)))
    assert await refusal(throttles, ns) is None  # count 3, now under 10


async def test_activations_in_flight_are_counted_from_the_invoke_stream(
    throttles: Throttles, store: EntityStore, bus: JetStreamBus
) -> None:
    ns, _ = await new_namespace(store, concurrentInvocations=3)
    other, _ = await new_namespace(store, concurrentInvocations=3)
    try:
        # Queued invocations no invoker takes: 3 of `ns`, 2 of another namespace.
        for i in range(3):
            await bus.publish(subjects.invoke_subject(ns, "x"), b"{}", msg_id=f"{ns}-{i}")
        for i in range(2):
            await bus.publish(subjects.invoke_subject(other, "y"), b"{}", msg_id=f"{other}-{i}")
        with pytest.raises(Throttled) as raised:
            await throttles.check_invoke(ns)
        assert raised.value.message == "Too many concurrent requests in flight (count: 3, allowed: 3)."
        # The other namespace's own count decides for it: 2 queued leave room for 1, not for 2 more. (The one
        # admitted here never reaches the stream, and the stream is read again before a refusal.)
        await throttles.check_invoke(other)
        with pytest.raises(Throttled) as raised:
            await throttles.check_invoke(other, count=2)
        assert raised.value.message == "Too many concurrent requests in flight (count: 2, allowed: 3)."
    finally:
        for name in (ns, other):
            await bus.js.purge_stream(subjects.INVOKE_STREAM, subject=invoke_filter(name))
    await asyncio.sleep(0.06)  # past the reading's ttl
    await throttles.check_invoke(ns)


class EchoPool:
    """Stands in for the container pool: these tests are about what reaches it."""

    async def run(self, request: RunRequest) -> RunOutcome:
        now = int(time.time() * 1000)
        value = request.run.value if isinstance(request.run.value, dict) else {}
        return RunOutcome(start=now, end=now, cold=False, status=200, body=encode(value))


# -- through the invoke route --------------------------------------------------------------------------------


@pytest.fixture
async def throttled_app(
    settings: Settings, store: EntityStore, activation_store: ActivationStore, bus: JetStreamBus
) -> AsyncIterator[Starlette]:
    app = create_app(settings, store, activation_store)
    async with (
        InvokerAgent(bus, store, EchoPool()),
        InvokeGateway(bus) as gateway,
        Throttles(bus, store, settings, clock=fixed_clock) as throttles,
    ):
        app_state(app).gateway = gateway
        app_state(app).throttles = throttles
        deadline = time.monotonic() + 10
        while not await gateway.registry.any_healthy():
            assert time.monotonic() < deadline, "the invoker never reported healthy"
            await asyncio.sleep(0.05)
        yield app


async def test_the_invoke_route_answers_429_past_the_rate_and_404_stays_404(
    throttled_app: Starlette, store: EntityStore
) -> None:
    _, key = await new_namespace(store, invocationsPerMinute=2)
    transport = httpx.ASGITransport(app=throttled_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key)) as client:
        code = {"exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"}}
        assert (await client.put("/api/v1/namespaces/_/actions/echo", json=code)).status_code == 200
        url = "/api/v1/namespaces/_/actions/echo?blocking=true&result=true"
        for i in range(2):
            r = await client.post(url, json={"i": i})
            assert (r.status_code, r.json()) == (200, {"i": i})
        r = await client.post(url, json={"i": 2})
        assert r.status_code == 429
        assert r.json()["error"] == "Too many requests in the last minute (count: 3, allowed: 2)."
        assert r.json()["code"]  # the transaction id, as in every error
        # A missing action is 404 before any throttle is asked.
        assert (await client.post("/api/v1/namespaces/_/actions/missing")).status_code == 404


async def test_an_app_without_throttles_throttles_nothing(
    client: httpx.AsyncClient, store: EntityStore
) -> None:
    # The `app` fixture attaches no gateway either: past the throttle, invoke stops at its 503.
    _, key = await new_namespace(store, invocationsPerMinute=0)
    code = {"exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"}}
    headers = basic(key)
    assert (await client.put("/api/v1/namespaces/_/actions/a", json=code, headers=headers)).status_code == 200
    assert (await client.post("/api/v1/namespaces/_/actions/a", headers=headers)).status_code == 503


async def test_the_limit_documents_show_the_settings(
    settings: Settings, store: EntityStore, activation_store: ActivationStore
) -> None:
    custom = msgspec.structs.replace(
        settings, invocations_per_minute=7, concurrent_invocations=3, fires_per_minute=9
    )
    app = create_app(custom, store, activation_store)
    _, key = await new_namespace(store, firesPerMinute=1)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key)) as client:
        doc = (await client.get("/")).json()["limits"]
        assert (doc["actions_per_minute"], doc["concurrent_actions"], doc["triggers_per_minute"]) == (7, 3, 9)
        own = (await client.get("/api/v1/namespaces/_/limits")).json()
        assert (own["invocationsPerMinute"], own["concurrentInvocations"], own["firesPerMinute"]) == (7, 3, 1)
        assert own["maxActionInstances"] == 3


# -- standalone's guest ----------------------------------------------------------------------------------------


async def test_standalone_limits_fill_in_what_the_record_leaves_unset(store: EntityStore) -> None:
    name = f"guest-{uuid.uuid4().hex[:8]}"
    key = f"{uuid.uuid4()}:{uuid.uuid4().hex}"
    assert await ensure_namespace(store, name, key, limits=GUEST_LIMITS) is True
    assert (await store.get_namespace(name)).limits == GUEST_LIMITS
    assert await ensure_namespace(store, name, key, limits=GUEST_LIMITS) is False  # idempotent
    # An operator's own value stays; a limit cleared back to the default is filled in again on the next boot.
    ns = await store.get_namespace(name)
    await store.put_namespace(msgspec.structs.replace(ns, limits=NamespaceLimits(concurrentInvocations=5)))
    assert await ensure_namespace(store, name, key, limits=GUEST_LIMITS) is True
    assert (await store.get_namespace(name)).limits == msgspec.structs.replace(
        GUEST_LIMITS, concurrentInvocations=5
    )
    # A namespace made before limits were set (an older standalone's guest) gets them too.
    older = f"guest-{uuid.uuid4().hex[:8]}"
    older_key = f"{uuid.uuid4()}:{uuid.uuid4().hex}"
    await ensure_namespace(store, older, older_key)
    assert (await store.get_namespace(older)).limits == NamespaceLimits()
    await ensure_namespace(store, older, older_key, limits=GUEST_LIMITS)
    assert (await store.get_namespace(older)).limits == GUEST_LIMITS
