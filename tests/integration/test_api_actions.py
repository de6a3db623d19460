"""Actions over HTTP against the real KV store: CRUD, kinds, limits, sizes, packages, sequences, sharing."""

from __future__ import annotations

import base64
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


def url(ns: str, path: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/actions" + (f"/{path}" if path else "")


def annotations(entity: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a.get("value") for a in entity["annotations"]}


def parameters(entity: dict[str, Any]) -> dict[str, Any]:
    return {p["key"]: p.get("value") for p in entity["parameters"]}


@pytest.fixture
async def other(app: Starlette, store: EntityStore) -> AsyncIterator[httpx.AsyncClient]:
    """A second namespace's client, to check what crosses namespaces and what does not."""
    name = f"ns-{uuid.uuid4().hex[:10]}"
    key = await create_namespace(store, name)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key)) as c:
        c.namespace = name  # type: ignore[attr-defined]
        yield c


async def put(client: httpx.AsyncClient, path: str, body: dict[str, Any], **query: str) -> httpx.Response:
    return await client.put(url("_", path), json=body, params=query)


async def assert_absent(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(url("_", path))
    assert r.status_code == 404, r.text
    assert r.json()["error"] == NOT_FOUND


# -- create, read, update --------------------------------------------------------------------------------


async def test_create_resolves_the_kind_and_adds_controller_annotations(ns_client: httpx.AsyncClient) -> None:
    r = await put(ns_client, "hello", {"exec": PY})
    assert r.status_code == 200, r.text
    action = r.json()
    assert action["namespace"] == ns_client.namespace  # type: ignore[attr-defined]
    assert action["name"] == "hello"
    assert action["version"] == "0.0.1"
    assert action["publish"] is False
    assert action["exec"] == {"kind": "python:3.11", "code": PY["code"], "binary": False}
    assert action["limits"] == {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
    assert annotations(action) == {"provide-api-key": False, "exec": "python:3.11"}
    assert action["updated"] > 0
    got = await ns_client.get(url("_", "hello"))
    assert got.status_code == 200
    assert got.json() == action


@pytest.mark.parametrize(
    ("kind", "stored"),
    [("nodejs:default", "nodejs:18"), ("python:3", "python:3.11"), (" Python:3.11 ", "python:3.11")],
)
async def test_kinds_are_stored_concrete(ns_client: httpx.AsyncClient, kind: str, stored: str) -> None:
    r = await put(ns_client, "k", {"exec": {"kind": kind, "code": "x"}})
    assert r.status_code == 200, r.text
    assert r.json()["exec"]["kind"] == stored
    assert annotations(r.json())["exec"] == stored


@pytest.mark.parametrize("kind", ["python:2", "blackbox", "java:8", "nodejs"])
async def test_unsupported_kinds_are_400_and_write_nothing(ns_client: httpx.AsyncClient, kind: str) -> None:
    r = await put(ns_client, "bad", {"exec": {"kind": kind, "code": "x", "image": "some/image"}})
    assert r.status_code == 400
    message = r.json()["error"]
    assert message.startswith(
        f"The specified runtime '{kind}' is not supported by this platform. Valid values are:"
    )
    assert "'python:3.11'" in message and "'nodejs:18'" in message
    await assert_absent(ns_client, "bad")


async def test_a_user_provide_api_key_annotation_is_kept(ns_client: httpx.AsyncClient) -> None:
    body = {
        "exec": PY,
        "annotations": [{"key": "provide-api-key", "value": True}, {"key": "exec", "value": "lie"}],
    }
    r = await put(ns_client, "keyed", body)
    assert annotations(r.json()) == {"provide-api-key": True, "exec": "python:3.11"}


async def test_existing_name_needs_overwrite_and_each_update_bumps_the_patch(
    ns_client: httpx.AsyncClient,
) -> None:
    assert (await put(ns_client, "a", {"exec": PY})).status_code == 200
    r = await put(ns_client, "a", {"exec": PY})
    assert r.status_code == 409
    assert r.json()["error"] == "resource already exists"
    assert (await put(ns_client, "a", {"exec": PY}, overwrite="true")).json()["version"] == "0.0.2"
    assert (await put(ns_client, "a", {}, overwrite="true")).json()["version"] == "0.0.3"


async def test_a_name_taken_by_another_collection_is_409(ns_client: httpx.AsyncClient) -> None:
    assert (await ns_client.put("/api/v1/namespaces/_/packages/shared", json={})).status_code == 200
    r = await put(ns_client, "shared", {"exec": PY}, overwrite="true")
    assert r.status_code == 409


async def test_partial_update_keeps_what_it_does_not_name(ns_client: httpx.AsyncClient) -> None:
    first = {
        "exec": PY,
        "parameters": [{"key": "x", "value": 1}],
        "annotations": [{"key": "web-export", "value": True}, {"key": "gone", "value": 1}],
        "limits": {"timeout": 1000, "memory": 128},
        "publish": True,
    }
    assert (await put(ns_client, "p", first)).status_code == 200
    update = {
        "limits": {"memory": 512},
        "annotations": [{"key": "extra", "value": "y"}],
        "delAnnotations": ["gone"],
    }
    r = await put(ns_client, "p", update, overwrite="true")
    assert r.status_code == 200, r.text
    action = r.json()
    assert action["exec"]["kind"] == "python:3.11" and action["exec"]["code"] == PY["code"]
    assert action["limits"] == {"timeout": 1000, "memory": 512, "logs": 10, "concurrency": 1}
    assert parameters(action) == {"x": 1}
    assert annotations(action) == {
        "web-export": True,
        "provide-api-key": False,
        "exec": "python:3.11",
        "extra": "y",
    }
    assert action["publish"] is True


async def test_parameters_are_replaced_on_update_and_deduplicated(ns_client: httpx.AsyncClient) -> None:
    body = {
        "exec": PY,
        "parameters": [{"key": "a", "value": 1}, {"key": "b", "value": 2}, {"key": "a", "value": 3}],
    }
    assert parameters((await put(ns_client, "d", body)).json()) == {"a": 3, "b": 2}
    r = await put(ns_client, "d", {"parameters": [{"key": "c", "value": None}]}, overwrite="true")
    assert [p["key"] for p in r.json()["parameters"]] == ["c"]


async def test_code_false_leaves_the_code_out(ns_client: httpx.AsyncClient) -> None:
    await put(ns_client, "c", {"exec": {**PY, "main": "handler"}})
    r = await ns_client.get(url("_", "c"), params={"code": "false"})
    assert r.json()["exec"] == {"kind": "python:3.11", "binary": False, "main": "handler"}
    r = await ns_client.get(url("_", "c"), params={"code": "maybe"})
    assert r.status_code == 400


async def test_base64_code_is_binary(ns_client: httpx.AsyncClient) -> None:
    zipped = base64.b64encode(b"PK\x03\x04 not really a zip").decode()
    r = await put(ns_client, "z", {"exec": {"kind": "python:default", "code": zipped}})
    assert r.json()["exec"]["binary"] is True
    listed = (await ns_client.get(url("_"))).json()
    assert [a["exec"] for a in listed if a["name"] == "z"] == [{"binary": True}]


# -- bad input: 4xx and nothing written -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {"timeout": 300001},
            "duration 300001 milliseconds exceeds allowed threshold of 300000 milliseconds",
        ),
        ({"timeout": 99}, "duration 99 milliseconds below allowed threshold of 100 milliseconds"),
        ({"memory": 1024}, "memory 1024 MB exceeds allowed threshold of 536870912 B"),
        ({"memory": 64}, "memory 64 MB below allowed threshold of 134217728 B"),
        ({"logs": 11}, "log size 11 MB exceeds allowed threshold of 10485760 B"),
        ({"concurrency": 2}, "concurrency 2 exceeds allowed threshold of 1"),
    ],
)
async def test_limits_out_of_range_are_400(
    ns_client: httpx.AsyncClient, limits: dict[str, int], message: str
) -> None:
    r = await put(ns_client, "l", {"exec": PY, "limits": limits})
    assert r.status_code == 400
    assert r.json()["error"] == f"The request content was malformed:\nrequirement failed: {message}"
    await assert_absent(ns_client, "l")


async def test_a_bad_limit_on_update_leaves_the_action_as_it_was(ns_client: httpx.AsyncClient) -> None:
    await put(ns_client, "u", {"exec": PY, "limits": {"memory": 128}})
    r = await put(ns_client, "u", {"limits": {"memory": 4096}}, overwrite="true")
    assert r.status_code == 400
    stored = (await ns_client.get(url("_", "u"))).json()
    assert stored["limits"]["memory"] == 128 and stored["version"] == "0.0.1"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "exec undefined"),
        ({"exec": {"kind": "python:default"}}, 400, "'code' must be a string"),
        ({"exec": {"code": "x"}}, 400, "malformed"),
        ({"exec": PY, "limits": {"memory": "big"}}, 400, "malformed"),
        ({"exec": PY, "parameters": {"a": 1}}, 400, "malformed"),
        ({"exec": PY, "parameters": [{"value": 1}]}, 400, "malformed"),
        ({"exec": PY, "publish": "yes"}, 400, "malformed"),
        ({"exec": PY, "version": "1.2"}, 400, "semantic version"),
    ],
)
async def test_malformed_bodies_are_400(
    ns_client: httpx.AsyncClient, body: dict[str, Any], status: int, message: str
) -> None:
    r = await put(ns_client, "m", body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    await assert_absent(ns_client, "m")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
async def test_non_object_bodies_are_400(ns_client: httpx.AsyncClient, raw: bytes) -> None:
    r = await ns_client.put(url("_", "raw"), content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()) == {"error", "code"}
    await assert_absent(ns_client, "raw")


async def test_oversized_parameters_and_annotations_are_413(ns_client: httpx.AsyncClient) -> None:
    big = [{"key": "blob", "value": "x" * (1024 * 1024)}]
    r = await put(ns_client, "big", {"exec": PY, "parameters": big})
    assert r.status_code == 413
    assert r.json()["error"] == "parameters larger than allowed: 1048582 > 1048576 bytes."
    r = await put(ns_client, "big", {"exec": PY, "annotations": big})
    assert r.status_code == 413
    assert r.json()["error"].startswith("annotations larger than allowed:")
    await assert_absent(ns_client, "big")


async def test_oversized_code_is_413(ns_client: httpx.AsyncClient) -> None:
    code = "#" * (48 * 1024 * 1024 + 1)
    r = await put(ns_client, "huge", {"exec": {"kind": "python:default", "code": code}})
    assert r.status_code == 413
    assert r.json()["error"] == f"exec larger than allowed: {len(code)} > {48 * 1024 * 1024} bytes."
    await assert_absent(ns_client, "huge")


@pytest.mark.parametrize("name", ["bad*name", "%20lead", "x" * 257, "a/b/c", "trailing%0A", "pkg/a%0A"])
async def test_invalid_names_are_400(ns_client: httpx.AsyncClient, name: str) -> None:
    await ns_client.put("/api/v1/namespaces/_/packages/pkg", json={})
    r = await ns_client.put(url("_", name), json={"exec": PY})
    assert r.status_code == 400
    error = r.json()["error"]
    assert "not allowed" in error or "characters long" in error or "control characters" in error
    assert (await ns_client.get(url("_"), params={"count": "true"})).json() == {"actions": 0}
    assert (await ns_client.get(url("_", "pkg/"), params={"count": "true"})).json() == {"actions": 0}


async def test_a_newline_inside_a_name_is_a_4xx_not_a_redirect(ns_client: httpx.AsyncClient) -> None:
    r = await ns_client.put(url("_", "a%0Ab"), json={"exec": PY})
    assert r.status_code == 400
    assert (await ns_client.get(url("_", "pkg%0Ax/"))).status_code == 400


# -- delete and list --------------------------------------------------------------------------------------


async def test_delete_returns_the_entity_and_removes_exactly_it(ns_client: httpx.AsyncClient) -> None:
    kept = (await put(ns_client, "keep", {"exec": PY})).json()
    created = (await put(ns_client, "drop", {"exec": PY})).json()
    r = await ns_client.delete(url("_", "drop"))
    assert r.status_code == 200
    assert r.json() == created
    await assert_absent(ns_client, "drop")
    assert (await ns_client.get(url("_", "keep"))).json() == kept
    r = await ns_client.delete(url("_", "drop"))
    assert r.status_code == 404 and r.json()["error"] == NOT_FOUND


async def test_list_shows_summaries_with_paging_and_count(ns_client: httpx.AsyncClient) -> None:
    for i in range(3):
        await put(ns_client, f"a{i}", {"exec": PY})
    await ns_client.put("/api/v1/namespaces/_/packages/pkg", json={})
    await put(ns_client, "pkg/inner", {"exec": PY})
    listed = (await ns_client.get(url("_"))).json()
    assert [a["name"] for a in listed] == ["a2", "a1", "a0"]  # newest first, packaged ones not here
    assert set(listed[0]) == {
        "namespace",
        "name",
        "version",
        "publish",
        "annotations",
        "updated",
        "limits",
        "exec",
    }
    assert listed[0]["exec"] == {"binary": False}
    assert [a["name"] for a in (await ns_client.get(url("_"), params={"limit": 1, "skip": 1})).json()] == [
        "a1"
    ]
    assert (await ns_client.get(url("_"), params={"count": "true"})).json() == {"actions": 3}
    assert (await ns_client.get(url("_"), params={"limit": 201})).status_code == 400
    assert (await ns_client.get(url("_") + "/")).json() == listed


# -- packaged actions -------------------------------------------------------------------------------------


async def test_packaged_actions_live_in_their_package(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    r = await put(ns_client, "nopkg/a", {"exec": PY})
    assert r.status_code == 404 and r.json()["error"] == NOT_FOUND
    pkg = {"parameters": [{"key": "p", "value": "package"}, {"key": "shared", "value": "package"}]}
    await ns_client.put("/api/v1/namespaces/_/packages/tools", json=pkg)
    body = {"exec": PY, "parameters": [{"key": "shared", "value": "action"}, {"key": "a", "value": 1}]}
    r = await put(ns_client, "tools/a", body)
    assert r.status_code == 200, r.text
    assert r.json()["namespace"] == f"{ns}/tools"
    assert parameters(r.json()) == {"shared": "action", "a": 1}
    got = (await ns_client.get(url("_", "tools/a"))).json()
    assert parameters(got) == {"p": "package", "shared": "action", "a": 1}  # package < action
    listed = (await ns_client.get(url("_", "tools/"))).json()
    assert [(a["namespace"], a["name"]) for a in listed] == [(f"{ns}/tools", "a")]
    assert (await ns_client.get(url("_", "tools/"), params={"count": "true"})).json() == {"actions": 1}
    assert (await ns_client.delete(url("_", "tools/a"))).json()["name"] == "a"
    await assert_absent(ns_client, "tools/a")


async def test_actions_cannot_be_written_through_a_binding(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await ns_client.put("/api/v1/namespaces/_/packages/base", json={"parameters": [{"key": "b", "value": 1}]})
    await put(ns_client, "base/act", {"exec": PY})
    binding = {"binding": {"namespace": ns, "name": "base"}, "parameters": [{"key": "b", "value": 2}]}
    await ns_client.put("/api/v1/namespaces/_/packages/bound", json=binding)
    for response in (
        await put(ns_client, "bound/new", {"exec": PY}),
        await ns_client.delete(url("_", "bound/act")),
    ):
        assert response.status_code == 400
        assert response.json()["error"] == "Operation not permitted on package binding."
    got = (await ns_client.get(url("_", "bound/act"))).json()
    assert got["namespace"] == f"{ns}/base"  # read through the binding: the bound package's action
    assert parameters(got) == {"b": 2}  # binding parameters override the package's
    assert [a["name"] for a in (await ns_client.get(url("_", "bound/"))).json()] == ["act"]


# -- other namespaces -------------------------------------------------------------------------------------


async def test_other_namespaces_read_only_published_packages(
    ns_client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    owner = ns_client.namespace  # type: ignore[attr-defined]
    await put(ns_client, "private", {"exec": PY})
    await ns_client.put("/api/v1/namespaces/_/packages/pub", json={"publish": True})
    await ns_client.put("/api/v1/namespaces/_/packages/priv", json={})
    await put(ns_client, "pub/a", {"exec": PY})
    await put(ns_client, "priv/a", {"exec": PY})

    assert (await other.get(url(owner, "private"))).status_code == 403
    assert (await other.get(url(owner))).status_code == 403
    assert (await other.put(url(owner, "x"), json={"exec": PY})).status_code == 403
    assert (await other.delete(url(owner, "pub/a"))).status_code == 403
    r = await other.get(url(owner, "pub/a"))
    assert r.status_code == 200 and r.json()["namespace"] == f"{owner}/pub"
    assert [a["name"] for a in (await other.get(url(owner, "pub/"))).json()] == ["a"]
    for path in ("priv/a", "priv/", "missing/a"):
        r = await other.get(url(owner, path))
        assert r.status_code == 403, path
        assert (
            r.json()["error"]
            == f"The supplied authentication is not authorized to access '{owner}/{path.split('/')[0]}'."
        )


# -- sequences --------------------------------------------------------------------------------------------


async def test_a_sequence_stores_its_components(ns_client: httpx.AsyncClient) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await put(ns_client, "s1", {"exec": PY})
    await ns_client.put("/api/v1/namespaces/_/packages/lib", json={})
    await put(ns_client, "lib/s2", {"exec": PY})
    body = {
        "exec": {"kind": "sequence", "components": ["/_/s1", f"/{ns}/lib/s2"]},
        "parameters": [{"key": "x", "value": 1}],
    }
    r = await put(ns_client, "seq", body)
    assert r.status_code == 200, r.text
    seq = r.json()
    components = [f"/{ns}/s1", f"/{ns}/lib/s2"]
    assert seq["exec"] == {"kind": "sequence", "components": components}
    assert seq["parameters"] == [{"key": "_actions", "value": components}]
    assert annotations(seq)["exec"] == "sequence"
    # Updating it into a code action drops the `_actions` parameter.
    r = await put(ns_client, "seq", {"exec": PY}, overwrite="true")
    assert r.json()["parameters"] == []


@pytest.mark.parametrize(
    ("components", "message"),
    [
        ([], "No component specified for the sequence."),
        (["/_/missing"], "Sequence component does not exist."),
        (["/_/s"] * 51, "Too many actions in the sequence."),
        (["justaname"], "The fully qualified name of the entity must contain"),
    ],
)
async def test_bad_sequences_are_400(
    ns_client: httpx.AsyncClient, components: list[str], message: str
) -> None:
    await put(ns_client, "s", {"exec": PY})
    r = await put(ns_client, "bad-seq", {"exec": {"kind": "sequence", "components": components}})
    assert r.status_code == 400
    assert message in r.json()["error"]
    await assert_absent(ns_client, "bad-seq")


async def test_sequences_may_not_refer_to_themselves_or_grow_past_50(ns_client: httpx.AsyncClient) -> None:
    await put(ns_client, "atom", {"exec": PY})
    await put(ns_client, "inner", {"exec": {"kind": "sequence", "components": ["/_/atom"] * 30}})
    r = await put(
        ns_client, "atom", {"exec": {"kind": "sequence", "components": ["/_/inner"]}}, overwrite="true"
    )
    assert r.status_code == 400 and r.json()["error"] == "Sequence may not refer to itself."
    r = await put(ns_client, "outer", {"exec": {"kind": "sequence", "components": ["/_/inner", "/_/inner"]}})
    assert r.status_code == 400 and r.json()["error"] == "Too many actions in the sequence."
    assert (await ns_client.get(url("_", "atom"))).json()["exec"]["kind"] == "python:3.11"


async def test_a_sequence_of_another_namespaces_private_action_is_403(
    ns_client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    await put(ns_client, "mine", {"exec": PY})
    owner = ns_client.namespace  # type: ignore[attr-defined]
    r = await other.put(
        url("_", "steal"), json={"exec": {"kind": "sequence", "components": [f"/{owner}/mine"]}}
    )
    assert r.status_code == 403
    assert r.json()["error"] == f"The supplied authentication is not authorized to access '{owner}/mine'."
    # A published package's action may be a component of another namespace's sequence.
    await ns_client.put("/api/v1/namespaces/_/packages/shared", json={"publish": True})
    await put(ns_client, "shared/step", {"exec": PY})
    seq = {"exec": {"kind": "sequence", "components": [f"/{owner}/shared/step"]}}
    r = await other.put(url("_", "reuse"), json=seq)
    assert r.status_code == 200, r.text
    assert r.json()["exec"]["components"] == [f"/{owner}/shared/step"]


# -- what `GET /` advertises is what the API accepts -----------------------------------------------------


async def test_system_info_advertises_the_runtimes_and_limits_enforced(
    client: httpx.AsyncClient, ns_client: httpx.AsyncClient
) -> None:
    info = (await client.get("/")).json()
    assert info["limits"]["min_action_duration"] == 100
    assert info["limits"]["max_action_duration"] == 300_000
    assert info["limits"]["max_action_memory"] == 512 * 1024 * 1024
    assert info["limits"]["sequence_length"] == 50
    advertised = [rt["kind"] for family in info["runtimes"].values() for rt in family]
    assert sorted(advertised) == [
        "go:1.19", "java:17", "native", "nodejs:18", "php:8.2", "python:3.11", "ruby:3.1", "rust:1.63",
    ]  # fmt: skip
    own = ns_client.namespace  # type: ignore[attr-defined]
    for kind in advertised:
        r = await ns_client.put(url(own, kind.replace(":", "-")), json={"exec": {"kind": kind, "code": "x"}})
        assert r.status_code == 200 and r.json()["exec"]["kind"] == kind
    limit = info["limits"]["max_action_duration"]
    r = await ns_client.put(url(own, "slow"), json={"exec": PY, "limits": {"timeout": limit}})
    assert r.status_code == 200
    r = await ns_client.put(url(own, "slower"), json={"exec": PY, "limits": {"timeout": limit + 1}})
    assert r.status_code == 400
