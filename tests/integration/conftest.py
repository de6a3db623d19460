"""Fixtures for API tests: the real app over a real JetStream bus, KV store and MongoDB wire server."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from broker.activation_store import ActivationStore
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.recorder import ActivationRecorder


def basic(key: str) -> dict[str, str]:
    """An `Authorization` header for a "uuid:secret" key."""
    return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}


@pytest.fixture(scope="session")
async def bus(settings: Settings) -> AsyncIterator[JetStreamBus]:
    async with JetStreamBus(settings) as bus:
        await bus.provision()
        yield bus


@pytest.fixture(scope="session")
def store(bus: JetStreamBus) -> EntityStore:
    return EntityStore(bus)


@pytest.fixture(scope="session")
async def activation_store(settings: Settings) -> AsyncIterator[ActivationStore]:
    async with ActivationStore.from_settings(settings) as activations:
        await activations.provision()
        yield activations


@pytest.fixture
async def recorder(bus: JetStreamBus, activation_store: ActivationStore) -> AsyncIterator[ActivationRecorder]:
    """The activation recorder moving records from the ACTIVATIONS stream into MongoDB, for one test."""
    async with ActivationRecorder(bus, activation_store) as recorder:
        yield recorder


@pytest.fixture
def app(settings: Settings, store: EntityStore, activation_store: ActivationStore) -> Starlette:
    return create_app(settings, store, activation_store)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process (ASGI), without credentials."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall") as c:
        yield c


@pytest.fixture
async def namespace(store: EntityStore) -> tuple[str, str]:
    """A fresh namespace for one test, and its key."""
    name = f"ns-{uuid.uuid4().hex[:10]}"
    return name, await create_namespace(store, name)


@pytest.fixture
async def ns_client(app: Starlette, namespace: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A client authenticated as the fresh `namespace`; its name is `ns_client.namespace`."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://squall", headers=basic(namespace[1])
    ) as c:
        c.namespace = namespace[0]  # type: ignore[attr-defined]
        yield c
