"""Packages over HTTP against the real KV store: CRUD, bindings, publish and public reads, force delete."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from broker.admin import create_namespace
from broker.entity_store import EntityStore
from tests.integration.conftest import basic

PY = {"kind": "python:default", "code": "def main(args):\n    return args\n"}
NOT_FOUND = "The requested resource does not exist."


def url(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/packages" + (f"/{name}" if name else "")


def action_url(path: str) -> str:
    return f"/api/v1/namespaces/_/actions/{path}"


def kv(entity: dict[str, Any], field: str) -> dict[str, Any]:
    return {p["key"]: p.get("value") for p in entity[field]}


@pytest.fixture
async def other(app: Starlette, store: EntityStore) -> AsyncIterator[httpx.AsyncClient]:
    name = f"ns-{uuid.uuid4().hex[:10]}"
    key = await create_namespace(store, name)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key)) as c:
        c.namespace = name  # type: ignore[attr-defined]
        yield c


async def test_create_get_update_a_package(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    r = await ns_client.put(url("_", "p"), json={"parameters": [{"key": "a", "value": 1}]})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["namespace"] == ns and created["name"] == "p"
    assert created["binding"] == {} and created["annotations"] == [] and created["version"] == "0.0.1"
    got = (await ns_client.get(url("_", "p"))).json()
    assert got == {**created, "actions": [], "feeds": []}
    assert (await ns_client.put(url("_", "p"), json={})).status_code == 409
    r = await ns_client.put(
        url("_", "p"), json={"annotations": [{"key": "x", "value": 1}]}, params={"overwrite": "true"}
    )
    assert r.json()["version"] == "0.0.2"
    assert kv(r.json(), "parameters") == {"a": 1}  # kept: not named by the update
    r = await ns_client.put(
        url("_", "p"), json={"annotations": [{"key": "y", "value": 2}]}, params={"overwrite": "true"}
    )
    assert kv(r.json(), "annotations") == {"y": 2}  # replaced, not merged, as OpenWhisk does for packages


async def test_a_package_lists_its_actions_and_feeds(ns_client: httpx.AsyncClient) -> None:
    await ns_client.put(url("_", "kit"), json={})
    await ns_client.put(action_url("kit/run"), json={"exec": PY})
    await ns_client.put(
        action_url("kit/changes"), json={"exec": PY, "annotations": [{"key": "feed", "value": True}]}
    )
    got = (await ns_client.get(url("_", "kit"))).json()
    assert [a["name"] for a in got["actions"]] == ["run"]
    assert [f["name"] for f in got["feeds"]] == ["changes"]
    assert set(got["actions"][0]) == {"name", "version", "annotations"}


async def test_default_is_a_reserved_name(ns_client: httpx.AsyncClient) -> None:
    r = await ns_client.put(url("_", "default"), json={})
    assert r.status_code == 400 and r.json()["error"] == "Package name 'default' is reserved."


async def test_list_summaries_and_count(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await ns_client.put(url("_", "one"), json={})
    await ns_client.put(url("_", "two"), json={"binding": {"namespace": "_", "name": "one"}})
    listed = (await ns_client.get(url("_"))).json()
    assert [(p["name"], p["binding"]) for p in listed] == [
        ("two", {"namespace": ns, "name": "one"}),
        ("one", False),
    ]
    assert set(listed[0]) == {"namespace", "name", "version", "publish", "annotations", "updated", "binding"}
    assert (await ns_client.get(url("_"), params={"count": "true"})).json() == {"packages": 2}
    assert (await ns_client.get(url("_"), params={"skip": -1})).status_code == 400


async def test_a_binding_merges_parameters_and_shows_the_bound_actions(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    base = {"parameters": [{"key": "a", "value": "base"}, {"key": "b", "value": "base"}]}
    await ns_client.put(url("_", "base"), json=base)
    await ns_client.put(action_url("base/act"), json={"exec": PY})
    body = {
        "binding": {"namespace": "_", "name": "base"},
        "parameters": [{"key": "b", "value": "binding"}],
        "annotations": [{"key": "binding", "value": "forged"}, {"key": "note", "value": 1}],
    }
    r = await ns_client.put(url("_", "mine"), json=body)
    assert r.status_code == 200, r.text
    bound = r.json()
    assert bound["binding"] == {"namespace": ns, "name": "base"}
    assert kv(bound, "annotations") == {"note": 1, "binding": {"namespace": ns, "name": "base"}}
    got = (await ns_client.get(url("_", "mine"))).json()
    assert got["name"] == "mine"
    assert kv(got, "parameters") == {"a": "base", "b": "binding"}  # package < binding
    assert [a["name"] for a in got["actions"]] == ["act"]


@pytest.mark.parametrize(
    ("binding", "status", "message"),
    [
        ({"namespace": "_", "name": "nothing"}, 400, "Binding references a package that does not exist."),
        ({"namespace": "_", "name": "bind1"}, 400, "Cannot bind to another package binding."),
        ({"name": "half"}, 400, "a binding needs both"),
        ({"namespace": "_", "name": "bad*name"}, 400, "not allowed"),
    ],
)
async def test_bad_bindings_are_refused_and_write_nothing(
    ns_client: httpx.AsyncClient, binding: dict[str, str], status: int, message: str
) -> None:
    await ns_client.put(url("_", "real"), json={})
    await ns_client.put(url("_", "bind1"), json={"binding": {"namespace": "_", "name": "real"}})
    r = await ns_client.put(url("_", "b2"), json={"binding": binding})
    assert r.status_code == status
    assert message in r.json()["error"]
    assert (await ns_client.get(url("_", "b2"))).status_code == 404


async def test_a_package_cannot_become_a_binding(ns_client: httpx.AsyncClient) -> None:
    await ns_client.put(url("_", "plain"), json={})
    await ns_client.put(url("_", "target"), json={})
    r = await ns_client.put(
        url("_", "plain"),
        json={"binding": {"namespace": "_", "name": "target"}},
        params={"overwrite": "true"},
    )
    assert r.status_code == 409
    assert r.json()["error"] == "Resource is a package and cannot be converted into a binding."
    assert (await ns_client.get(url("_", "plain"))).json()["binding"] == {}


async def test_published_packages_are_readable_from_other_namespaces(
    ns_client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    owner = ns_client.namespace  # type: ignore[attr-defined]
    await ns_client.put(url("_", "pub"), json={"publish": True, "parameters": [{"key": "k", "value": 1}]})
    await ns_client.put(url("_", "priv"), json={})
    await ns_client.put(
        url("_", "pubbind"), json={"binding": {"namespace": "_", "name": "pub"}, "publish": True}
    )
    await ns_client.put(action_url("pub/act"), json={"exec": PY})

    listed = (await other.get(url(owner), params={"public": "true"})).json()
    assert [p["name"] for p in listed] == ["pub"]  # never private packages, never bindings
    assert (await other.get(url(owner), params={"count": "true"})).json() == {"packages": 1}
    got = await other.get(url(owner, "pub"))
    assert got.status_code == 200 and [a["name"] for a in got.json()["actions"]] == ["act"]
    for name in ("priv", "pubbind", "nothing"):
        r = await other.get(url(owner, name))
        assert r.status_code == 403, name
        assert (
            r.json()["error"] == f"The supplied authentication is not authorized to access '{owner}/{name}'."
        )
    assert (await other.put(url(owner, "pub"), json={}, params={"overwrite": "true"})).status_code == 403
    assert (await other.delete(url(owner, "pub"))).status_code == 403

    # Another namespace may bind to the published package, not to the private one.
    r = await other.put(url("_", "theirs"), json={"binding": {"namespace": owner, "name": "pub"}})
    assert r.status_code == 200, r.text
    got = (await other.get(url("_", "theirs"))).json()
    assert kv(got, "parameters") == {"k": 1} and [a["name"] for a in got["actions"]] == ["act"]
    r = await other.get("/api/v1/namespaces/_/actions/theirs/act")
    assert r.status_code == 200 and r.json()["namespace"] == f"{owner}/pub"
    r = await other.put(url("_", "nope"), json={"binding": {"namespace": owner, "name": "priv"}})
    assert r.status_code == 403


async def test_delete_needs_force_for_a_package_with_actions(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await ns_client.put(url("_", "full"), json={})
    await ns_client.put(url("_", "alias"), json={"binding": {"namespace": ns, "name": "full"}})
    for name in ("x", "y"):
        await ns_client.put(action_url(f"full/{name}"), json={"exec": PY})
    await ns_client.put(action_url("outside"), json={"exec": PY})

    r = await ns_client.delete(url("_", "full"))
    assert r.status_code == 409
    assert (
        r.json()["error"]
        == "Package not empty (contains 2 entities). Set force param or delete package contents."
    )
    alias = await ns_client.delete(url("_", "alias"))  # a binding goes without touching the bound actions
    assert alias.status_code == 200 and alias.json()["name"] == "alias"
    await ns_client.delete(action_url("full/y"))
    r = await ns_client.delete(url("_", "full"))
    assert r.json()["error"].startswith("Package not empty (contains 1 entity).")

    r = await ns_client.delete(url("_", "full"), params={"force": "true"})
    assert r.status_code == 200 and r.json()["name"] == "full"
    assert (await ns_client.get(url("_", "full"))).status_code == 404
    assert (await ns_client.get(action_url("full/x"))).status_code == 404
    assert (await ns_client.get(action_url("outside"))).status_code == 200
    r = await ns_client.delete(url("_", "full"))
    assert r.status_code == 404 and r.json()["error"] == NOT_FOUND


async def test_post_on_a_package_is_refused(ns_client: httpx.AsyncClient) -> None:
    await ns_client.put(url("_", "nopost"), json={})
    assert (await ns_client.post(url("_", "nopost"), json={})).status_code == 405


async def test_oversized_package_parameters_are_413(ns_client: httpx.AsyncClient) -> None:
    big = [{"key": "k", "value": "v" * (1024 * 1024)}]
    r = await ns_client.put(url("_", "huge"), json={"parameters": big})
    assert r.status_code == 413 and r.json()["error"].startswith("parameters larger than allowed:")
    assert (await ns_client.get(url("_", "huge"))).status_code == 404


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"binding": 3}', b'{"parameters": [{"key": 1}]}'])
async def test_malformed_package_bodies_are_400(ns_client: httpx.AsyncClient, body: bytes) -> None:
    r = await ns_client.put(url("_", "mal"), content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error", "code"}
    assert (await ns_client.get(url("_", "mal"))).status_code == 404


async def test_an_empty_body_creates_a_plain_package(ns_client: httpx.AsyncClient) -> None:
    r = await ns_client.put(url("_", "empty"), content=b"")
    assert r.status_code == 200 and r.json()["binding"] == {}
