"""Reading activations over HTTP from the real MongoDB store: list filters and shapes, get, result, logs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from broker.activation_store import ActivationStore
from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, make_response, new_activation_id
from broker.admin import create_namespace
from broker.entities import KeyValue
from broker.entity_store import EntityStore
from tests.integration.conftest import basic

NOW = int(time.time() * 1000)


def path(suffix: str = "", namespace: str = "_") -> str:
    return f"/api/v1/namespaces/{namespace}/activations{suffix}"


def record(
    namespace: str, start: int, name: str = "hello", package: str | None = None, **fields: Any
) -> Activation:
    where = f"{namespace}/{package}/{name}" if package else f"{namespace}/{name}"
    values: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "subject": namespace,
        "activationId": new_activation_id(),
        "start": start,
        "end": start + 7,
        "duration": 7,
        "response": make_response(SUCCESS, {"n": start % 1000}),
        "logs": [f"2026-01-01T00:00:00.000000000Z stdout: run {start}"],
        "version": "0.0.1",
        "publish": False,
        "annotations": [KeyValue(key="path", value=where), KeyValue(key="kind", value="nodejs:18")],
    }
    values.update(fields)
    return Activation(**values)


@pytest.fixture
async def records(ns_client: httpx.AsyncClient, activation_store: ActivationStore) -> list[Activation]:
    """Five records of the caller's namespace (oldest first) and one of another namespace."""
    ns: str = ns_client.namespace  # type: ignore[attr-defined]
    mine = [
        record(ns, NOW - 5000, "hello"),
        record(ns, NOW - 4000, "other"),
        record(ns, NOW - 3000, "hello", package="pkg"),
        record(ns, NOW - 2000, "hello", response=make_response(APPLICATION_ERROR, {"error": "no"})),
        record(ns, NOW - 1000, "trig", end=0, duration=None, logs=[]),  # a trigger record never ends
    ]
    await activation_store.insert_many([*mine, record(f"ns-{uuid.uuid4().hex[:8]}", NOW, "hello")])
    return mine


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["activationId"] for i in items]


async def test_list_is_newest_first_summaries(
    ns_client: httpx.AsyncClient, records: list[Activation]
) -> None:
    r = await ns_client.get(path())
    assert r.status_code == 200
    items = r.json()
    assert ids(items) == [a.activationId for a in reversed(records)]
    open_item, failed = items[0], items[1]
    assert set(open_item) == {
        "namespace",
        "name",
        "version",
        "publish",
        "annotations",
        "activationId",
        "start",
    }
    assert failed["statusCode"] == 1 and failed["end"] == failed["start"] + 7 and failed["duration"] == 7
    assert "response" not in failed and "logs" not in failed


async def test_docs_returns_full_records(ns_client: httpx.AsyncClient, records: list[Activation]) -> None:
    items = (await ns_client.get(path("?docs=true&limit=2"))).json()
    assert ids(items) == [records[4].activationId, records[3].activationId]
    assert items[1]["response"] == {
        "status": "application error",
        "success": False,
        "result": {"error": "no"},
    }
    assert items[1]["logs"] == records[3].logs


async def test_count_and_paging(ns_client: httpx.AsyncClient, records: list[Activation]) -> None:
    assert (await ns_client.get(path("?count=true"))).json() == {"activations": 5}
    assert (await ns_client.get(path("?count=true&skip=2"))).json() == {"activations": 3}
    assert (await ns_client.get(path("?count=true&name=hello"))).json() == {"activations": 2}
    page = (await ns_client.get(path("?skip=1&limit=2"))).json()
    assert ids(page) == [records[3].activationId, records[2].activationId]
    r = await ns_client.get(path("?count=true&docs=true"))
    assert (r.status_code, r.json()["error"]) == (400, "The parameter 'docs' is not permitted with 'count'.")


async def test_name_filters_by_action_or_package_and_action(
    ns_client: httpx.AsyncClient, records: list[Activation]
) -> None:
    plain = (await ns_client.get(path("?name=hello"))).json()
    assert ids(plain) == [records[3].activationId, records[0].activationId]
    packaged = (await ns_client.get(path("?name=pkg/hello"))).json()
    assert ids(packaged) == [records[2].activationId]
    assert len((await ns_client.get(path("?name="))).json()) == 5  # empty: no filter


@pytest.mark.parametrize("value", ["a/b/c", "bad*name", "a//b/c"])
async def test_a_bad_name_filter_is_400(ns_client: httpx.AsyncClient, value: str) -> None:
    r = await ns_client.get(path(), params={"name": value})
    assert r.status_code == 400
    assert r.json()["error"] == f"Parameter may be a 'simple' name or 'package-name/simple' name: {value}"


async def test_since_and_upto_bound_the_start_inclusively(
    ns_client: httpx.AsyncClient, records: list[Activation]
) -> None:
    window = (await ns_client.get(path(f"?since={NOW - 4000}&upto={NOW - 2000}"))).json()
    assert ids(window) == [records[3].activationId, records[2].activationId, records[1].activationId]
    assert (await ns_client.get(path(f"?count=true&since={NOW - 1000}"))).json() == {"activations": 1}


@pytest.mark.parametrize("value", ["yesterday", "1.5", "99999999999999999999", "0x10"])
async def test_a_bad_epoch_is_400(ns_client: httpx.AsyncClient, value: str) -> None:
    for name in ("since", "upto"):
        r = await ns_client.get(path(), params={name: value})
        assert r.status_code == 400
        assert r.json()["error"] == f"Parameter is not a valid value for epoch seconds: {value}"


async def test_bad_paging_is_400(ns_client: httpx.AsyncClient) -> None:
    for query in ("?limit=201", "?limit=-1", "?skip=-1", "?skip=abc", f"?skip={2**31}", "?docs=maybe"):
        r = await ns_client.get(path(query))
        assert r.status_code == 400, query
        assert set(r.json()) == {"error", "code"}


async def test_get_result_and_logs_of_one_activation(
    ns_client: httpx.AsyncClient, records: list[Activation]
) -> None:
    wanted = records[3]
    r = await ns_client.get(path(f"/{wanted.activationId}"))
    assert r.status_code == 200
    body = r.json()
    assert body["activationId"] == wanted.activationId
    assert body["response"] == {"status": "application error", "success": False, "result": {"error": "no"}}
    assert body["annotations"] == [
        {"key": "path", "value": wanted.annotations[0].value},
        {"key": "kind", "value": "nodejs:18"},
    ]
    assert (body["start"], body["end"], body["duration"]) == (wanted.start, wanted.end, 7)
    result = (await ns_client.get(path(f"/{wanted.activationId}/result"))).json()
    assert result == {"status": "application error", "success": False, "result": {"error": "no"}}
    logs = (await ns_client.get(path(f"/{wanted.activationId}/logs"))).json()
    assert logs == {"logs": wanted.logs}


async def test_result_shows_the_size_of_a_truncated_result(
    ns_client: httpx.AsyncClient, activation_store: ActivationStore
) -> None:
    ns: str = ns_client.namespace  # type: ignore[attr-defined]
    big = record(ns, NOW, response=make_response(SUCCESS, {"cut": "..."}, size=2_000_000))
    await activation_store.insert(big)
    result = (await ns_client.get(path(f"/{big.activationId}/result"))).json()
    assert result == {"status": "success", "success": True, "result": {"cut": "..."}, "size": 2_000_000}


@pytest.mark.parametrize(
    ("aid", "message"),
    [
        ("abc", "Activation id length is 3 but must be 32."),
        ("0" * 33, "Activation id length is 33 but must be 32."),
        ("A" * 32, "The activation id is not valid."),
        ("g" * 32, "The activation id is not valid."),
    ],
)
async def test_a_malformed_activation_id_is_400(ns_client: httpx.AsyncClient, aid: str, message: str) -> None:
    for suffix in ("", "/result", "/logs"):
        r = await ns_client.get(path(f"/{aid}{suffix}"))
        assert (r.status_code, r.json()["error"]) == (400, message)


async def test_an_unknown_activation_is_404(ns_client: httpx.AsyncClient) -> None:
    for suffix in ("", "/result", "/logs"):
        r = await ns_client.get(path(f"/{new_activation_id()}{suffix}"))
        assert (r.status_code, r.json()["error"]) == (404, "The requested resource does not exist.")


async def test_other_namespaces_activations_are_invisible_or_403(
    ns_client: httpx.AsyncClient,
    client: httpx.AsyncClient,
    store: EntityStore,
    activation_store: ActivationStore,
    namespace: tuple[str, str],
) -> None:
    other = f"ns-{uuid.uuid4().hex[:10]}"
    other_key = await create_namespace(store, other)
    theirs = record(other, NOW)
    await activation_store.insert(theirs)
    # Through `_`, the caller sees only its own records; an id from elsewhere is unknown to it.
    assert (await ns_client.get(path())).json() == []
    assert (await ns_client.get(path(f"/{theirs.activationId}"))).status_code == 404
    # Naming another namespace is refused outright.
    r = await client.get(path(namespace=namespace[0]), headers=basic(other_key))
    assert r.status_code == 403
    r = await client.get(path(f"/{theirs.activationId}", namespace[0]), headers=basic(other_key))
    assert r.status_code == 403
    assert (await client.get(path(namespace=other), headers=basic(other_key))).json()[0]["activationId"] == (
        theirs.activationId
    )


async def test_a_result_with_a_64_bit_integer_reads_back(
    ns_client: httpx.AsyncClient, activation_store: ActivationStore
) -> None:
    ns: str = ns_client.namespace  # type: ignore[attr-defined]
    stamped = record(ns, NOW, response=make_response(SUCCESS, {"at": NOW}))
    await activation_store.insert(stamped)
    r = await ns_client.get(path(f"/{stamped.activationId}/result"))
    assert r.status_code == 200
    assert r.json()["result"] == {"at": NOW}
