"""ActivationStore against a real MongoDB wire server (nx-27017 from the session fixtures)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.activation_store import ActivationStore
from broker.activations import SUCCESS, Activation, make_response, new_activation_id
from broker.entities import KeyValue
from broker.errors import BadRequest, NotFound, Unavailable
from squall.embedded import EmbeddedMongo, free_port

NOW = int(time.time() * 1000)
DAY_MS = 86_400_000


def record(start: int, *, name: str = "hello", package: str | None = None, **overrides: Any) -> Activation:
    namespace = overrides.pop("namespace", "guest")
    path = f"{namespace}/{package}/{name}" if package else f"{namespace}/{name}"
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "subject": namespace,
        "activationId": new_activation_id(),
        "start": start,
        "end": start + 10,
        "duration": 10,
        "response": make_response(SUCCESS, {"start": start}),
        "logs": [],
        "version": "0.0.1",
        "publish": False,
        "annotations": [KeyValue(key="path", value=path)],
    }
    fields.update(overrides)
    return Activation(**fields)


@pytest.fixture
async def store(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[ActivationStore]:
    async with ActivationStore(mongo_uri, mongo_db_name) as store:
        await store.provision()
        yield store


async def eventually(condition: Callable[[], Awaitable[bool]], deadline_s: float = 10.0) -> bool:
    """Poll `condition` until it holds or the deadline passes (for effects the server applies lazily)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if await condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def test_duplicate_insert_is_a_noop_and_keeps_the_first_version(store: ActivationStore) -> None:
    first = record(NOW)
    second = record(NOW + 5, activationId=first.activationId, logs=["second"])
    assert await store.insert(first) is True
    assert await store.insert(second) is False
    fresh = record(NOW + 1)
    # Unordered batch: duplicates (of stored ids and within the batch) are skipped, the rest is stored.
    assert await store.insert_many([second, fresh, fresh]) == 1
    assert await store.count("guest") == 2
    assert await store.get("guest", first.activationId) == first


async def test_list_is_newest_first_with_skip_and_limit(store: ActivationStore) -> None:
    records = [record(NOW + i * 1000) for i in range(12)]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assert await store.insert_many(shuffled) == 12
    newest_first = sorted(records, key=lambda r: r.start, reverse=True)
    assert await store.list("guest") == newest_first
    page = await store.list("guest", skip=3, limit=4)
    assert [r.activationId for r in page] == [r.activationId for r in newest_first[3:7]]
    assert await store.list("guest", skip=20) == []
    assert len(await store.list("guest", limit=0)) == 12
    with pytest.raises(BadRequest):
        await store.list("guest", limit=-1)


async def test_filters_since_upto_name_and_package_path(store: ActivationStore) -> None:
    plain = [record(NOW + i, name="hello") for i in range(3)]
    other = [record(NOW + 10 + i, name="bye") for i in range(2)]
    packaged = [record(NOW + 20 + i, name="hello", package="utils") for i in range(2)]
    elsewhere = record(NOW + 5, namespace="other")
    await store.insert_many([*plain, *other, *packaged, elsewhere])

    assert {r.activationId for r in await store.list("guest", name="hello")} == {
        r.activationId for r in plain
    }
    assert [r.activationId for r in await store.list("guest", name="utils/hello")] == [
        r.activationId for r in reversed(packaged)
    ]
    # since/upto are inclusive bounds on start, in epoch ms.
    window = await store.list("guest", since=NOW + 1, upto=NOW + 10)
    assert [r.start for r in window] == [NOW + 10, NOW + 2, NOW + 1]
    assert await store.count("guest", since=NOW + 20) == 2
    assert await store.count("guest", name="bye", upto=NOW + 10) == 1
    assert await store.count("guest") == 7
    assert await store.count("other") == 1
    assert await store.list("guest", name="nothing") == []


async def test_get_is_scoped_to_the_namespace(store: ActivationStore) -> None:
    mine = record(NOW)
    await store.insert(mine)
    assert (await store.get("guest", mine.activationId)).response.result == {"start": NOW}
    with pytest.raises(NotFound):
        await store.get("other", mine.activationId)
    with pytest.raises(NotFound):
        await store.get("guest", new_activation_id())
    with pytest.raises(BadRequest):
        await store.get("guest", "not-an-id")


async def index_keys(store: ActivationStore) -> dict[tuple[str, ...], dict[str, Any]]:
    indexes = await store.collection.index_information()
    return {tuple(field for field, _ in spec["key"]): spec for spec in indexes.values()}


async def test_provision_twice_keeps_the_indexes(store: ActivationStore) -> None:
    await store.provision()
    by_key = await index_keys(store)
    assert by_key[("activationId",)].get("unique") is True
    assert not any("expireAfterSeconds" in spec for spec in by_key.values())
    assert ("namespace", "start", "activationId") in by_key
    assert ("namespace", "entityPath", "start", "activationId") in by_key


async def test_provision_drops_the_list_indexes_of_earlier_versions(
    mongo_uri: str, mongo_db_name: str
) -> None:
    async with ActivationStore(mongo_uri, mongo_db_name) as store:
        await store.collection.create_index([("namespace", 1), ("start", -1)], name="ns_start")
        await store.collection.create_index(
            [("namespace", 1), ("entityPath", 1), ("start", -1)], name="ns_path"
        )
        await store.provision()
        by_key = await index_keys(store)
    assert ("namespace", "start") not in by_key
    assert ("namespace", "entityPath", "start") not in by_key
    assert ("namespace", "start", "activationId") in by_key


async def test_records_of_the_same_millisecond_page_in_a_stable_order(store: ActivationStore) -> None:
    same = [record(NOW) for _ in range(9)]
    await store.insert_many(same)
    expected = sorted((r.activationId for r in same), reverse=True)
    pages = [await store.list("guest", skip=skip, limit=3) for skip in (0, 3, 6)]
    assert [r.activationId for page in pages for r in page] == expected


async def test_unreachable_server_is_unavailable_quickly() -> None:
    uri = f"mongodb://127.0.0.1:{free_port()}/"
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        async with ActivationStore(uri, "x", timeout_s=0.5):
            pass
    assert time.monotonic() - started < 3
    assert caught.value.message.startswith(f"cannot reach MongoDB at {uri}: ")
    assert "\n" not in caught.value.message


async def test_server_going_away_is_unavailable(tmp_path: Path) -> None:
    async with EmbeddedMongo(tmp_path) as server:
        store = ActivationStore(server.uri, "x", timeout_s=0.5)
        await store.__aenter__()
    try:
        with pytest.raises(Unavailable, match="cannot reach MongoDB"):
            await store.count("guest")
    finally:
        await store.__aexit__(None, None, None)


async def test_store_outside_its_context_is_a_programming_error(mongo_uri: str) -> None:
    with pytest.raises(RuntimeError, match="outside"):
        await ActivationStore(mongo_uri, "x").count("guest")
