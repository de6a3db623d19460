"""Triggers over HTTP against the real KV store: OpenWhisk's shapes, PUT/overwrite semantics and 4xx cases."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from broker.entities import TRIGGERS
from broker.entity_store import EntityStore
from broker.errors import NotFound
from tests.integration.conftest import basic

MB = 1024 * 1024


def path(name: str = "", namespace: str = "_") -> str:
    base = f"/api/v1/namespaces/{namespace}/triggers"
    return f"{base}/{name}" if name else base


async def create(client: httpx.AsyncClient, name: str, body: Any = None) -> dict[str, Any]:
    r = await client.put(path(name), json=body if body is not None else {})
    assert r.status_code == 200, r.text
    created: dict[str, Any] = r.json()
    return created


async def assert_absent(store: EntityStore, namespace: str, name: str) -> None:
    with pytest.raises(NotFound):
        await store.get(TRIGGERS, namespace, name)


async def test_create_returns_the_trigger_in_openwhisk_shape(ns_client: httpx.AsyncClient) -> None:
    body = await create(
        ns_client,
        "t1",
        {"parameters": [{"key": "x", "value": 1}], "annotations": [{"key": "a", "value": "b"}]},
    )
    assert body["namespace"] == ns_client.namespace  # type: ignore[attr-defined]
    assert body["name"] == "t1"
    assert body["version"] == "0.0.1"
    assert body["publish"] is False
    assert body["limits"] == {}
    assert body["parameters"] == [{"key": "x", "value": 1}]
    assert body["annotations"] == [{"key": "a", "value": "b"}]
    assert isinstance(body["updated"], int) and body["updated"] > 0
    assert "rules" not in body  # no rule has bound to it yet
    r = await ns_client.get(path("t1"))
    assert r.status_code == 200
    assert r.json() == body


async def test_an_empty_body_creates_a_default_trigger(ns_client: httpx.AsyncClient) -> None:
    r = await ns_client.put(path("bare"), content=b"")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["parameters"], body["annotations"], body["limits"]) == ([], [], {})


async def test_put_without_overwrite_on_an_existing_trigger_is_409(
    ns_client: httpx.AsyncClient, store: EntityStore
) -> None:
    await create(ns_client, "t", {"parameters": [{"key": "x", "value": 1}]})
    r = await ns_client.put(path("t"), json={"parameters": [{"key": "x", "value": 2}]})
    assert r.status_code == 409
    assert r.json()["error"] == "resource already exists"
    stored = await store.get(TRIGGERS, ns_client.namespace, "t")  # type: ignore[attr-defined]
    assert stored.entity.parameters[0].value == 1


async def test_overwrite_bumps_the_patch_version_and_keeps_absent_fields(
    ns_client: httpx.AsyncClient,
) -> None:
    await create(
        ns_client, "t", {"parameters": [{"key": "x", "value": 1}], "annotations": [{"key": "a", "value": 1}]}
    )
    r = await ns_client.put(path("t") + "?overwrite=true", json={"parameters": [{"key": "y", "value": 2}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "0.0.2"
    assert body["parameters"] == [{"key": "y", "value": 2}]
    assert body["annotations"] == [{"key": "a", "value": 1}]  # not in the body: kept
    r = await ns_client.put(path("t") + "?overwrite=true", json={"publish": True})
    assert (r.json()["version"], r.json()["publish"]) == ("0.0.3", True)


async def test_overwrite_creates_when_absent(ns_client: httpx.AsyncClient) -> None:
    r = await ns_client.put(path("fresh") + "?overwrite=true", json={})
    assert r.status_code == 200
    assert r.json()["version"] == "0.0.1"


async def test_a_given_version_is_kept_on_create_and_a_bad_one_refused(
    ns_client: httpx.AsyncClient, store: EntityStore
) -> None:
    assert (await create(ns_client, "v", {"version": "1.2.3"}))["version"] == "1.2.3"
    r = await ns_client.put(path("bad-version"), json={"version": "one"})
    assert r.status_code == 400
    await assert_absent(store, ns_client.namespace, "bad-version")  # type: ignore[attr-defined]


async def test_repeated_parameter_keys_are_one_parameter(ns_client: httpx.AsyncClient) -> None:
    body = await create(
        ns_client, "dup", {"parameters": [{"key": "x", "value": 1}, {"key": "x", "value": 2}]}
    )
    assert body["parameters"] == [{"key": "x", "value": 2}]


async def test_unknown_body_fields_are_ignored(ns_client: httpx.AsyncClient) -> None:
    body = await create(ns_client, "extra", {"whatever": 1, "limits": {"foo": 1}})
    assert body["limits"] == {}
    assert "whatever" not in body


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"parameters": {"x": 1}}',  # OpenWhisk wants a list of {key, value}
        b'{"parameters": [{"value": 1}]}',  # a parameter without key
        b'{"annotations": "a"}',
        b'{"limits": 5}',
        b'{"publish": "yes"}',
        b"[]",
    ],
)
async def test_malformed_bodies_are_400_and_write_nothing(
    ns_client: httpx.AsyncClient, store: EntityStore, raw: bytes
) -> None:
    name = f"m-{uuid.uuid4().hex[:6]}"
    r = await ns_client.put(path(name), content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "code"}
    assert r.json()["error"].startswith("The request content was malformed")
    await assert_absent(store, ns_client.namespace, name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", ["parameters", "annotations"])
async def test_oversized_parameters_are_413_and_write_nothing(
    ns_client: httpx.AsyncClient, store: EntityStore, field: str
) -> None:
    big = [{"key": "k", "value": "a" * MB}]
    r = await ns_client.put(path("big"), json={field: big})
    assert r.status_code == 413
    assert r.json()["error"] == f"{field} larger than allowed: {MB + 3} > {MB} bytes."
    await assert_absent(store, ns_client.namespace, "big")  # type: ignore[attr-defined]


@pytest.mark.parametrize("feed", ["", "a,b", 5, None, "/ns/pkg/bad*name"])
async def test_an_invalid_feed_annotation_is_400_on_create(
    ns_client: httpx.AsyncClient, store: EntityStore, feed: Any
) -> None:
    r = await ns_client.put(path("fed"), json={"annotations": [{"key": "feed", "value": feed}]})
    assert r.status_code == 400
    assert r.json()["error"] == "Feed name is not valid"
    await assert_absent(store, ns_client.namespace, "fed")  # type: ignore[attr-defined]


async def test_a_valid_feed_annotation_is_kept(ns_client: httpx.AsyncClient) -> None:
    feed = [{"key": "feed", "value": "/whisk.system/alarms/alarm"}]
    assert (await create(ns_client, "fed", {"annotations": feed}))["annotations"] == feed


@pytest.mark.parametrize("name", ["bad*name", " lead", "x" * 257])
async def test_invalid_names_are_400(ns_client: httpx.AsyncClient, name: str) -> None:
    r = await ns_client.put(path(name), json={})
    assert r.status_code == 400
    assert (await ns_client.get(path(name))).status_code == 400


async def test_the_longest_allowed_name_works(ns_client: httpx.AsyncClient) -> None:
    name = "x" * 256
    assert (await create(ns_client, name))["name"] == name


async def test_get_and_delete_of_a_missing_trigger_are_404(ns_client: httpx.AsyncClient) -> None:
    for r in (await ns_client.get(path("nope")), await ns_client.delete(path("nope"))):
        assert r.status_code == 404
        assert r.json()["error"] == "The requested resource does not exist."


async def test_delete_returns_the_trigger_and_removes_exactly_it(ns_client: httpx.AsyncClient) -> None:
    kept = await create(ns_client, "keep")
    gone = await create(ns_client, "gone", {"parameters": [{"key": "p", "value": True}]})
    r = await ns_client.delete(path("gone"))
    assert r.status_code == 200
    assert r.json() == gone
    assert (await ns_client.get(path("gone"))).status_code == 404
    assert (await ns_client.get(path("keep"))).json() == kept
    assert (await ns_client.put(path("gone"), json={})).status_code == 200  # the name is free again


async def test_list_shows_summaries_newest_first_with_count(ns_client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await create(ns_client, name, {"parameters": [{"key": "x", "value": 1}]})
    r = await ns_client.get(path())
    assert r.status_code == 200
    items = r.json()
    assert [t["name"] for t in items] == ["c", "b", "a"]
    assert set(items[0]) == {"namespace", "name", "version", "publish", "annotations", "updated"}
    assert (await ns_client.get(path() + "?limit=2&skip=1")).json()[0]["name"] == "b"
    assert len((await ns_client.get(path() + "?limit=2")).json()) == 2
    assert (await ns_client.get(path() + "?count=true")).json() == {"triggers": 3}
    assert (await ns_client.get(path() + "?count=true&skip=1")).json() == {"triggers": 2}
    assert (await ns_client.get(path() + "?limit=201")).status_code == 400


async def test_the_own_namespace_by_name_and_another_namespace_is_403(
    ns_client: httpx.AsyncClient, client: httpx.AsyncClient, namespace: tuple[str, str], store: EntityStore
) -> None:
    from broker.admin import create_namespace

    await create(ns_client, "mine")
    own = namespace[0]
    assert (await ns_client.get(path("mine", own))).status_code == 200
    other = f"ns-{uuid.uuid4().hex[:10]}"
    other_key = await create_namespace(store, other)
    for r in (
        await client.get(path("mine", own), headers=basic(other_key)),
        await client.get(path(namespace=own), headers=basic(other_key)),
        await client.put(path("x", own), json={}, headers=basic(other_key)),
        await client.delete(path("mine", own), headers=basic(other_key)),
    ):
        assert r.status_code == 403
        assert r.json()["error"] == "The supplied authentication is not authorized to access this resource."
    assert (await client.get(path("mine", own))).status_code == 401


async def test_a_name_taken_by_another_collection_is_409(
    ns_client: httpx.AsyncClient, store: EntityStore
) -> None:
    from broker.entities import RULES, FullyQualifiedName, Rule

    ns = ns_client.namespace  # type: ignore[attr-defined]
    ref = FullyQualifiedName(path=ns, name="x")
    await store.create(RULES, Rule(namespace=ns, name="taken", trigger=ref, action=ref))
    r = await ns_client.put(path("taken"), json={})
    assert r.status_code == 409
    r = await ns_client.get(path("taken"))
    assert r.status_code == 409
    assert r.json()["error"] == "Resource by this name exists but is not in this collection."
    assert (await ns_client.delete(path("taken"))).status_code == 409
