"""Bounded storage on a real nats-server: full streams refuse cleanly, quotas, listings that never read code,
caches bounded by bytes, and a deleted namespace's data gone."""

from __future__ import annotations

import uuid

import httpx
import msgspec
import pytest

from api.errors import status_of
from broker import admin, codec, subjects
from broker.admin import create_namespace, delete_namespace
from broker.bus import JetStreamBus
from broker.dead_letters import DeadLetter, DeadLetters, FailureReason
from broker.entities import (
    ACTIONS,
    PACKAGES,
    RULES,
    TRIGGERS,
    Action,
    Exec,
    FullyQualifiedName,
    Package,
    Rule,
    Trigger,
)
from broker.entity_store import EntityStore
from broker.errors import BadRequest, NotFound, QuotaExceeded, StorageFull
from broker.invocations import Invocation
from broker.kv_cache import KvCache
from broker.namespaces import NamespaceLimits
from broker.topology import BucketSpec, StreamSpec
from tests.integration.conftest import basic

MB = 1024 * 1024


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def action(namespace: str, name: str, code: str = "def main(a): return a") -> Action:
    return Action(namespace=namespace, name=name, exec=Exec(kind="python:3.11", code=code))


async def test_a_full_work_queue_refuses_new_messages_with_a_503(bus: JetStreamBus) -> None:
    tag = uuid.uuid4().hex[:8]
    spec = StreamSpec(
        name=f"FULL_{tag}", subjects=(f"full.{tag}.>",), retention="work-queue", max_bytes=4096, discard="new"
    )
    await bus.provision_stream(spec)
    refused: StorageFull | None = None
    stored = 0
    while refused is None and stored < 100:
        try:
            await bus.publish(f"full.{tag}.x", b"x" * 200)
            stored += 1
        except StorageFull as exc:
            refused = exc
    assert refused is not None and 5 < stored < 30, "the stream took more than its 4 KB"
    assert status_of(refused) == 503
    assert "no room left" in refused.message


async def test_bucket_bounds_are_brought_to_the_topology_on_existing_buckets(bus: JetStreamBus) -> None:
    name = f"bounds_{uuid.uuid4().hex[:8]}"
    await bus.provision_bucket(BucketSpec(name=name))  # as an earlier version made it: unbounded
    await bus.provision_bucket(BucketSpec(name=name, max_bytes=3 * MB))
    info = await bus.js.stream_info(f"KV_{name}")
    assert info.config.max_bytes == 3 * MB
    kv = await bus.kv(name)
    await kv.put("k", b"v")  # still a working bucket


async def test_entity_quota_counts_every_collection_and_answers_403(
    store: EntityStore, client: httpx.AsyncClient
) -> None:
    ns = fresh("quota")
    key = await create_namespace(store, ns, limits=NamespaceLimits(maxEntities=4))
    await store.create(ACTIONS, action(ns, "a"))
    await store.create(TRIGGERS, Trigger(namespace=ns, name="t"))
    await store.create(PACKAGES, Package(namespace=ns, name="p"))
    await store.create(ACTIONS, action(f"{ns}/p", "inner"))  # a packaged action counts too
    assert await store.count(ns) == 4
    ref = FullyQualifiedName(path=ns, name="t")
    with pytest.raises(QuotaExceeded):
        await store.create(RULES, Rule(namespace=ns, name="r", trigger=ref, action=ref))

    r = await client.put(
        "/api/v1/namespaces/_/actions/b",
        json={"exec": {"kind": "python:3.11", "code": "x"}},
        headers=basic(key),
    )
    assert r.status_code == 403, r.text
    assert set(r.json()) == {"error", "code"}
    assert "limit of 4 entities" in r.json()["error"]
    limits = (await client.get("/api/v1/namespaces/_/limits", headers=basic(key))).json()
    assert limits["maxEntities"] == 4
    # Updates are not creates: the quota never blocks changing what exists.
    r = await client.put(
        "/api/v1/namespaces/_/actions/a?overwrite=true",
        json={"exec": {"kind": "python:3.11", "code": "def main(a): return {}"}},
        headers=basic(key),
    )
    assert r.status_code == 200, r.text
    # Deleting frees room.
    await store.delete(ACTIONS, ns, "a")
    await store.create(ACTIONS, action(ns, "c"))


async def test_listings_read_summaries_never_the_code(bus: JetStreamBus, store: EntityStore) -> None:
    ns = fresh("list")
    big = "# " + "x" * (1 * MB) + "\ndef main(a): return a"  # a blob: too large for a KV value
    await store.create(ACTIONS, action(ns, "big", big))
    await store.create(ACTIONS, action(ns, "small"))
    await store.create(
        TRIGGERS,
        Trigger(namespace=ns, name="t", parameters=[{"key": "k", "value": "v"}]),  # type: ignore[list-item]
    )
    # Remove the big action's blob behind the store's back: a listing that read code would now fail.
    envelope = msgspec.json.decode((await (await bus.kv(subjects.ENTITIES_BUCKET)).get(f"{ns}.big")).value)
    await (await bus.object_store(subjects.BLOBS_BUCKET)).delete(envelope["blob"])

    listed = await store.list(ACTIONS, ns)
    assert [a.name for a in listed] == ["small", "big"]
    assert all(a.exec.code is msgspec.UNSET for a in listed)
    assert all(a.exec.kind == "python:3.11" for a in listed)
    assert [t.name for t in await store.list(TRIGGERS, ns)] == ["t"]
    assert (await store.list(TRIGGERS, ns))[0].parameters == []  # summaries leave parameters out
    assert (await store.get(TRIGGERS, ns, "t")).entity.parameters != []


async def test_entries_written_without_summaries_are_still_listed(
    bus: JetStreamBus, store: EntityStore
) -> None:
    ns = fresh("old")
    body = codec.encode(action(ns, "legacy"))
    # As an earlier version wrote it: a plain KV value, no headers.
    await (await bus.kv(subjects.ENTITIES_BUCKET)).put(
        f"{ns}.legacy", b'{"kind":"actions","body":' + body + b"}"
    )
    assert [a.name for a in await store.list(ACTIONS, ns)] == ["legacy"]
    assert await store.list(TRIGGERS, ns) == []
    assert await store.count(ns) == 1


def letter(namespace: str, n: int) -> DeadLetter:
    letter_id = uuid.uuid4().hex
    invocation = Invocation(activationId=letter_id, namespace=namespace, action=f"{namespace}/a")
    return DeadLetter(
        id=letter_id,
        namespace=namespace,
        action=f"{namespace}/a",
        reason=FailureReason(status="application error", error=f"failure {n}"),
        attempts=1,
        activationIds=[letter_id],
        invocation=invocation,
        firstFailed=n,
        lastFailed=n,
    )


async def test_dead_letters_keep_the_namespace_quota_by_dropping_the_oldest(
    bus: JetStreamBus, store: EntityStore
) -> None:
    ns = fresh("dlq")
    await create_namespace(store, ns, limits=NamespaceLimits(maxDeadLetters=3))
    letters = DeadLetters(bus)
    for n in range(5):
        await letters.publish(letter(ns, n))
    kept = await letters.list(ns)
    assert [x.firstFailed for x in kept] == [4, 3, 2]  # newest first; 0 and 1 dropped


async def test_kv_cache_is_bounded_by_bytes(bus: JetStreamBus) -> None:
    async def load_of(value: bytes) -> bytes:
        return value

    async with KvCache[bytes](bus, subjects.AUTHKEYS_BUCKET, max_bytes=1000, sizeof=len) as cache:
        for i in range(5):
            value = bytes([i]) * 400

            async def load(v: bytes = value) -> bytes:
                return await load_of(v)

            assert await cache.get(f"k{i}", load) == value
        assert cache.size_bytes <= 1000 and len(cache) == 2  # the two most recent

        async def huge() -> bytes:
            return b"x" * 5000

        assert await cache.get("huge", huge) == b"x" * 5000  # served, not kept
        assert cache.size_bytes <= 1000 and len(cache) == 2


async def test_a_cached_value_is_read_again_once_older_than_its_maximum_age(bus: JetStreamBus) -> None:
    """An invalidation lost in a cluster must not keep a value forever: past its maximum age it is read again."""
    now = [1000.0]
    loads: list[bytes] = []

    async def load() -> bytes:
        loads.append(b"v%d" % len(loads))
        return loads[-1]

    async with KvCache[bytes](bus, subjects.AUTHKEYS_BUCKET, max_age_s=60, clock=lambda: now[0]) as cache:
        assert await cache.get("k", load) == b"v0"
        now[0] += 60
        assert await cache.get("k", load) == b"v0", "still within its age"
        now[0] += 0.5
        assert await cache.get("k", load) == b"v1", "too old: read again"
        assert await cache.get("k", load) == b"v1" and len(loads) == 2
        assert len(cache) == 1 and cache.size_bytes > 0


async def test_deleting_a_namespace_deletes_its_data(bus: JetStreamBus, store: EntityStore) -> None:
    ns = fresh("gone")
    await create_namespace(store, ns)
    await store.create(ACTIONS, action(ns, "a"))
    await store.create(ACTIONS, action(ns, "big", "#" + "y" * MB))
    await store.create(TRIGGERS, Trigger(namespace=ns, name="t"))
    letters = DeadLetters(bus)
    await letters.publish(letter(ns, 1))
    await bus.publish(subjects.invoke_subject(ns, "a"), b"{}")

    await delete_namespace(store, ns)

    with pytest.raises(NotFound):
        await store.get_namespace(ns)
    await create_namespace(store, ns)  # a new namespace of that name starts empty
    assert await store.count(ns) == 0
    assert await store.list(ACTIONS, ns) == []
    assert await letters.count(ns) == 0
    total, _ = await bus.count(subjects.INVOKE_STREAM, subjects.invoke_filter(ns))
    assert total == 0


@pytest.mark.parametrize("name", ["a/b", "", "bad\nname", "../x", " lead"])
async def test_admin_refuses_invalid_namespace_names(store: EntityStore, name: str) -> None:
    with pytest.raises(BadRequest):
        await admin.create_namespace(store, name)
    with pytest.raises(BadRequest):
        await admin.delete_namespace(store, name)
    with pytest.raises(BadRequest):
        await admin.rotate_key(store, name)
