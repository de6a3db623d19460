"""Installing the whisk.system catalog into a real JetStream KV store: first install, idempotency, a new
release's updates and removals, concurrent installers; and what another namespace can do with it over the API."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest

from broker import params
from broker.admin import exists
from broker.config import Settings
from broker.entities import ACTIONS, PACKAGES, Action, KeyValue
from broker.entity_store import EntityStore
from squall.catalog import install_catalog
from squall.catalog.installer import existing_entities, install
from squall.catalog.manifest import DIGEST_ANNOTATION, CatalogEntity, catalog_entities, digest_of


def system_settings(settings: Settings) -> Settings:
    """A system namespace of its own per test: tests share one nats-server."""
    return msgspec.structs.replace(settings, system_namespace=f"sys-{uuid.uuid4().hex[:10]}")


async def snapshot(store: EntityStore, namespace: str) -> dict[str, tuple[str, str | None]]:
    """Every package and packaged action of `namespace`: path -> (version, catalog digest)."""
    found: dict[str, tuple[str, str | None]] = {}
    for package in await store.list(PACKAGES, namespace):
        found[package.name] = (package.version, params.lookup(package.annotations, DIGEST_ANNOTATION))
        for action in await store.list_in_package(namespace, package.name):
            digest = params.lookup(action.annotations, DIGEST_ANNOTATION)
            found[f"{package.name}/{action.name}"] = (action.version, digest)
    return found


def expected(namespace: str, version: str = "0.0.1") -> dict[str, tuple[str, str | None]]:
    return {e.path: (version, e.digest) for e in catalog_entities(namespace)}


async def test_first_install_creates_the_namespace_and_everything(
    store: EntityStore, settings: Settings
) -> None:
    settings = system_settings(settings)
    ns = settings.system_namespace
    started = time.perf_counter()
    done = await install_catalog(store, settings)
    print(f"\nfirst install ({len(done.created)} entities): {(time.perf_counter() - started) * 1000:.1f} ms")
    assert await exists(store, ns)
    assert len(await store.keys_of(ns)) == 1, "the system namespace gets one (unshown) key"
    assert len(done.created) == len(catalog_entities(ns))
    assert await snapshot(store, ns) == expected(ns)
    echo = (await store.get(ACTIONS, ns, "utils/echo")).entity
    assert echo.publish and echo.exec.kind == "nodejs:18"


async def test_a_second_install_writes_nothing_and_is_cheap(store: EntityStore, settings: Settings) -> None:
    settings = system_settings(settings)
    ns = settings.system_namespace
    await install_catalog(store, settings)
    keys = [k.uuid for k in await store.keys_of(ns)]
    before = await snapshot(store, ns)
    started = time.perf_counter()
    again = await install_catalog(store, settings)
    elapsed = time.perf_counter() - started
    assert not again.changed, again
    assert await snapshot(store, ns) == before
    assert [k.uuid for k in await store.keys_of(ns)] == keys, "an existing namespace keeps its keys"
    print(f"\nrepeat install (nothing changed): {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0


def release_two(namespace: str) -> list[CatalogEntity]:
    """The catalog as a later release might ship it: echo's code changed, utils/cat and the messaging
    package dropped, and a new action utils/upper."""
    out: list[CatalogEntity] = []
    for e in catalog_entities(namespace):
        if e.path in ("utils/cat", "messaging", "messaging/natsFeed"):
            continue
        if e.path == "utils/echo":
            out.append(restamp(e, code="function main (params) { return { echoed: params } }"))
            continue
        out.append(e)
        if e.path == "utils/hosturl":
            upper = msgspec.structs.replace(e.entity, name="upper")
            assert isinstance(upper, Action)
            out.append(restamp(CatalogEntity(path="utils/upper", entity=upper, digest=""), code="x"))
    return out


def restamp(e: CatalogEntity, *, code: str) -> CatalogEntity:
    entity = e.entity
    assert isinstance(entity, Action)
    bare = [a for a in entity.annotations if a.key != DIGEST_ANNOTATION]
    changed = msgspec.structs.replace(
        entity, annotations=bare, exec=msgspec.structs.replace(entity.exec, code=code)
    )
    digest = digest_of(changed)
    annotations = [*bare, KeyValue(key=DIGEST_ANNOTATION, value=digest)]
    return CatalogEntity(e.path, msgspec.structs.replace(changed, annotations=annotations), digest)


async def test_a_new_release_updates_adds_and_removes_only_its_own(
    store: EntityStore, settings: Settings
) -> None:
    settings = system_settings(settings)
    ns = settings.system_namespace
    await install_catalog(store, settings)
    # Something in the namespace the catalog did not install (an operator's): no digest, never removed.
    echo = (await store.get(ACTIONS, ns, "utils/echo")).entity
    await store.create(ACTIONS, msgspec.structs.replace(echo, name="operators", annotations=[]))
    await store.create(
        ACTIONS, msgspec.structs.replace(echo, namespace=f"{ns}/messaging", name="kept", annotations=[])
    )

    done = await install(store, ns, release_two(ns))
    assert sorted(done.updated) == ["actions:utils/echo"]
    assert sorted(done.created) == ["actions:utils/upper"]
    # The messaging package still holds the operator's action, so only the catalog's action goes.
    assert sorted(done.deleted) == ["actions:messaging/natsFeed", "actions:utils/cat"]
    after = await snapshot(store, ns)
    assert after["utils/echo"][0] == "0.0.2", "a changed action gets a new version"
    assert (await store.get(ACTIONS, ns, "utils/echo")).entity.exec.code == (
        "function main (params) { return { echoed: params } }"
    )
    assert "utils/cat" not in after and "messaging/natsFeed" not in after
    assert after["utils/operators"] == ("0.0.1", None)
    assert after["messaging/kept"] == ("0.0.1", None)
    assert after["utils/sort"] == expected(ns)["utils/sort"], "unchanged entities are not rewritten"

    # Emptied of what is not the catalog's, the dropped package goes too; and the next run is a no-op.
    await store.delete(ACTIONS, ns, "messaging/kept")
    done = await install(store, ns, release_two(ns))
    assert done.deleted == ["packages:messaging"]
    assert not (await install(store, ns, release_two(ns))).changed


async def test_concurrent_installers_converge(store: EntityStore, settings: Settings) -> None:
    settings = system_settings(settings)
    ns = settings.system_namespace
    results = await asyncio.gather(*(install_catalog(store, settings) for _ in range(4)))
    assert await snapshot(store, ns) == expected(ns), "every entity once, at its first version"
    created = [name for r in results for name in r.created]
    assert sorted(created) == sorted(f"{e.collection}:{e.path}" for e in catalog_entities(ns))
    assert not any(r.updated or r.deleted for r in results)
    assert len(await store.keys_of(ns)) >= 1
    assert await existing_entities(store, ns)


# -- what another namespace can do with the catalog ------------------------------------------------------------


@pytest.fixture
async def system(store: EntityStore, settings: Settings) -> str:
    settings = system_settings(settings)
    await install_catalog(store, settings)
    return settings.system_namespace


async def put(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/api/v1/namespaces/_/{path}", json=body)


async def test_another_namespace_reads_binds_and_composes(system: str, ns_client: httpx.AsyncClient) -> None:
    base = f"/api/v1/namespaces/{system}"
    r = await ns_client.get(f"{base}/packages/utils")
    assert r.status_code == 200, r.text
    pkg = r.json()
    assert pkg["publish"] is True
    assert sorted(a["name"] for a in pkg["actions"]) == sorted(
        ["cat", "date", "echo", "head", "sort", "split", "smash", "hosturl", "namespace"]
    )
    r = await ns_client.get(f"{base}/packages/alarms")
    assert sorted(f["name"] for f in r.json()["feeds"]) == ["alarm", "interval", "once"]
    assert r.json()["parameters"] == [{"key": "trigger_payload", "value": ""}]

    r = await ns_client.get(f"{base}/packages")
    assert {p["name"] for p in r.json()} == {"utils", "samples", "alarms", "webhooks", "messaging"}
    r = await ns_client.get(f"{base}/actions/utils/")
    assert r.status_code == 200 and len(r.json()) == 9, r.text
    r = await ns_client.get(f"{base}/actions/utils/sort")
    assert r.status_code == 200 and r.json()["exec"]["kind"] == "nodejs:18", r.text

    r = await put(ns_client, "packages/myutils", {"binding": {"namespace": system, "name": "utils"}})
    assert r.status_code == 200, r.text
    r = await ns_client.get("/api/v1/namespaces/_/packages/myutils")
    assert len(r.json()["actions"]) == 9

    components = [f"/{system}/utils/split", f"/{system}/utils/sort", "/_/myutils/head"]
    r = await put(ns_client, "actions/pipeline", {"exec": {"kind": "sequence", "components": components}})
    assert r.status_code == 200, r.text

    r = await put(ns_client, "triggers/t", {})
    assert r.status_code == 200, r.text
    r = await put(ns_client, "rules/r", {"trigger": "/_/t", "action": f"/{system}/utils/echo"})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == {"path": f"{system}/utils", "name": "echo"}


async def test_another_namespace_cannot_write_into_the_system_namespace(
    system: str, ns_client: httpx.AsyncClient
) -> None:
    base = f"/api/v1/namespaces/{system}"
    code = {"exec": {"kind": "nodejs:18", "code": "function main () { return {} }"}}
    writes = [
        ns_client.put(f"{base}/actions/utils/echo?overwrite=true", json=code),
        ns_client.put(f"{base}/actions/mine", json=code),
        ns_client.put(f"{base}/packages/utils?overwrite=true", json={}),
        ns_client.delete(f"{base}/actions/utils/echo"),
        ns_client.delete(f"{base}/packages/utils"),
        ns_client.put(f"{base}/triggers/t", json={}),
    ]
    for r in await asyncio.gather(*writes):
        assert r.status_code == 403, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
        assert set(r.json()) == {"error", "code"}
