"""Web actions against the real bus and gateway (the container pool stood in for): the per-namespace limit on
anonymous web requests, the owner's namespace paying for the runs, and the 202 after the wait."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from broker.activation_store import ActivationStore
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.codec import encode
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.namespaces import NamespaceLimits
from broker.throttles import Throttles
from runtimes.contract import RunOutcome, RunRequest
from runtimes.invoker import InvokerAgent
from tests.integration.conftest import basic

FIXED = 1_800_000_000.0  # a fixed clock: the minute never turns in the middle of a test
ECHO = {
    "exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"},
    "annotations": [{"key": "web-export", "value": True}],
}


class EchoPool:
    """Stands in for the container pool: these tests are about what reaches it, and when."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.hold = False

    async def run(self, request: RunRequest) -> RunOutcome:
        if self.hold:
            await self.release.wait()
        now = int(time.time() * 1000)
        value = request.run.value if isinstance(request.run.value, dict) else {}
        return RunOutcome(start=now, end=now, cold=False, status=200, body=encode(value))


@asynccontextmanager
async def web_app(
    settings: Settings, store: EntityStore, activations: ActivationStore, bus: JetStreamBus, pool: EchoPool
) -> AsyncIterator[Starlette]:
    app = create_app(settings, store, activations)
    async with (
        InvokerAgent(bus, store, pool),
        InvokeGateway(bus) as gateway,
        Throttles(bus, store, settings, clock=lambda: FIXED) as throttles,
    ):
        app_state(app).gateway = gateway
        app_state(app).throttles = throttles
        deadline = time.monotonic() + 10
        while not await gateway.registry.any_healthy():
            assert time.monotonic() < deadline, "the invoker never reported healthy"
            await asyncio.sleep(0.05)
        yield app


async def namespace_with_echo(store: EntityStore, app: Starlette, **limits: int) -> tuple[str, str]:
    name = f"web-{uuid.uuid4().hex[:10]}"
    key = await create_namespace(store, name, limits=NamespaceLimits(**limits))
    async with client_of(app, key) as client:
        r = await client.put("/api/v1/namespaces/_/actions/echo", json=ECHO)
        assert r.status_code == 200, r.text
    return name, key


def client_of(app: Starlette, key: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(
        transport=transport, base_url="http://squall", headers=basic(key) if key else None, timeout=30
    )


async def test_anonymous_web_requests_are_limited_per_namespace(
    settings: Settings, store: EntityStore, activation_store: ActivationStore, bus: JetStreamBus
) -> None:
    few = msgspec.structs.replace(settings, web_requests_per_minute=2)
    async with web_app(few, store, activation_store, bus, EchoPool()) as app:
        ns, key = await namespace_with_echo(store, app, invocationsPerMinute=100)
        other, _ = await namespace_with_echo(store, app, invocationsPerMinute=100)
        async with client_of(app) as anonymous, client_of(app, key) as owner:
            for i in range(2):
                r = await anonymous.get(f"/api/v1/web/{ns}/default/echo.json?i={i}")
                assert (r.status_code, r.json()["i"]) == (200, str(i)), r.text
            r = await anonymous.get(f"/api/v1/web/{ns}/default/echo.json")
            assert r.status_code == 429
            assert r.json()["error"] == "Too many requests in the last minute (count: 3, allowed: 2)."
            assert r.headers["access-control-allow-origin"] == "*"
            # Authenticated callers are not anonymous traffic; another namespace has its own count.
            assert (await owner.get(f"/api/v1/web/{ns}/default/echo.json")).status_code == 200
            assert (await anonymous.get(f"/api/v1/web/{other}/default/echo.json")).status_code == 200


async def test_the_owner_s_namespace_pays_for_the_runs(
    settings: Settings, store: EntityStore, activation_store: ActivationStore, bus: JetStreamBus
) -> None:
    async with web_app(settings, store, activation_store, bus, EchoPool()) as app:
        ns, _ = await namespace_with_echo(store, app, invocationsPerMinute=1)
        async with client_of(app) as anonymous:
            assert (await anonymous.get(f"/api/v1/web/{ns}/default/echo.json")).status_code == 200
            r = await anonymous.get(f"/api/v1/web/{ns}/default/echo.json")
            assert r.status_code == 429
            assert r.json()["error"] == "Too many requests in the last minute (count: 2, allowed: 1)."


async def test_a_run_past_the_wait_answers_202_response_not_yet_ready(
    settings: Settings, store: EntityStore, activation_store: ActivationStore, bus: JetStreamBus
) -> None:
    pool = EchoPool()
    pool.hold = True
    short = msgspec.structs.replace(settings, web_action_wait_s=0.3)
    async with web_app(short, store, activation_store, bus, pool) as app:
        ns, _ = await namespace_with_echo(store, app)
        async with client_of(app) as anonymous:
            started = time.monotonic()
            r = await anonymous.get(f"/api/v1/web/{ns}/default/echo.json")
            assert time.monotonic() - started < 5
            pool.release.set()
        assert r.status_code == 202, r.text
        assert (
            r.json()["error"] == "Response not yet ready." and r.json()["code"] == r.headers["x-request-id"]
        )
        assert len(r.headers["x-openwhisk-activation-id"]) == 32


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_a_missing_web_action_is_404_with_cors_for_any_method(
    method: str, settings: Settings, store: EntityStore, activation_store: ActivationStore, bus: JetStreamBus
) -> None:
    async with (
        web_app(settings, store, activation_store, bus, EchoPool()) as app,
        client_of(app) as anonymous,
    ):
        r = await anonymous.request(method, "/api/v1/web/nobody/default/nothing.json")
        assert r.status_code == 404 and r.json()["error"] == "The requested resource does not exist."
        assert r.headers["access-control-allow-methods"] == "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH"
        # Served from the API's origin, a web answer is sandboxed into an origin of its own (the console's key).
        assert r.headers["content-security-policy"].startswith("sandbox allow-scripts")
