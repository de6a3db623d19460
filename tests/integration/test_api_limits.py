"""`GET /api/v1/namespaces/{namespace}/limits`: the system defaults, and a namespace's own overrides."""

from __future__ import annotations

import uuid

import httpx

from broker.admin import create_namespace
from broker.entity_store import EntityStore
from broker.namespaces import Namespace, NamespaceLimits
from tests.integration.conftest import basic

DEFAULTS = {
    "invocationsPerMinute": 60,
    "concurrentInvocations": 30,
    "firesPerMinute": 60,
    "minActionMemory": 128,
    "maxActionMemory": 512,
    "minActionTimeout": 100,
    "maxActionTimeout": 300000,
    "minActionLogs": 0,
    "maxActionLogs": 10,
    "minActionConcurrency": 1,
    "maxActionConcurrency": 1,
    "maxParameterSize": 1048576,
    "maxActionInstances": 30,
    "maxEntities": 1000,
    "maxDeadLetters": 1000,
}


def limits(namespace: str = "_") -> str:
    return f"/api/v1/namespaces/{namespace}/limits"


async def test_a_namespace_without_overrides_gets_the_system_limits(ns_client: httpx.AsyncClient) -> None:
    r = await ns_client.get(limits())
    assert r.status_code == 200
    assert r.json() == DEFAULTS
    by_name = await ns_client.get(limits(ns_client.namespace))  # type: ignore[attr-defined]
    assert by_name.json() == DEFAULTS


async def test_overrides_replace_the_defaults_they_name(
    client: httpx.AsyncClient, store: EntityStore
) -> None:
    name = f"ns-{uuid.uuid4().hex[:10]}"
    key = await create_namespace(
        store, name, limits=NamespaceLimits(invocationsPerMinute=5, concurrentInvocations=7)
    )
    r = await client.get(limits(), headers=basic(key))
    assert r.status_code == 200
    assert r.json() == {
        **DEFAULTS,
        "invocationsPerMinute": 5,
        "concurrentInvocations": 7,
        "maxActionInstances": 7,  # no more instances than activations in flight
    }
    # A later change of the namespace record shows at once (no cache to go stale).
    await store.put_namespace(Namespace(name=name, limits=NamespaceLimits(firesPerMinute=2)))
    assert (await client.get(limits(), headers=basic(key))).json() == {**DEFAULTS, "firesPerMinute": 2}


async def test_another_namespaces_limits_are_403_and_no_key_is_401(
    ns_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    r = await ns_client.get(limits(f"ns-{uuid.uuid4().hex[:10]}"))
    assert r.status_code == 403
    assert r.json()["error"] == "The supplied authentication is not authorized to access this resource."
    r = await client.get(limits())
    assert r.status_code == 401


async def test_limits_take_no_other_verb(ns_client: httpx.AsyncClient) -> None:
    for method in ("PUT", "POST", "DELETE"):
        assert (await ns_client.request(method, limits())).status_code == 405
