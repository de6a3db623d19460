"""The KV entity store on a real nats-server: CRUD, revisions, name clashes, listings, namespaces, keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from broker.bus import JetStreamBus
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
    bump_patch,
)
from broker.entity_store import EntityStore, in_listing
from broker.entity_summary import summary_of
from broker.errors import ConcurrentModification, Conflict, NotFound, WrongCollection
from broker.namespaces import Namespace, NamespaceLimits, make_auth_key


@pytest.fixture
async def store(nats_url: str) -> AsyncIterator[EntityStore]:
    async with JetStreamBus(nats_url) as bus:
        await bus.provision()
        yield EntityStore(bus)


@pytest.fixture
def ns() -> str:
    """A namespace of this test only: the nats-server is shared by the session."""
    return f"ns {uuid.uuid4().hex[:10]}"  # a space too, so escaping is exercised


def action(ns: str, name: str, code: str = "def main(a): return a") -> Action:
    return Action(namespace=ns, name=name, exec=Exec(kind="python:3.11", code=code, binary=False))


async def test_create_get_update_delete(store: EntityStore, ns: str) -> None:
    created = await store.create(ACTIONS, action(ns, "hello"))
    assert created.revision > 0
    assert created.entity.updated > 0
    got = await store.get(ACTIONS, ns, "hello")
    assert got == created

    changed = msgspec.structs.replace(got.entity, version=bump_patch(got.entity.version), publish=True)
    updated = await store.update(ACTIONS, changed, got.revision)
    assert updated.revision > got.revision
    again = await store.get(ACTIONS, ns, "hello")
    assert again.entity.version == "0.0.2"
    assert again.entity.publish
    assert again.revision == updated.revision

    deleted = await store.delete(ACTIONS, ns, "hello")
    assert deleted == again.entity
    with pytest.raises(NotFound):
        await store.get(ACTIONS, ns, "hello")
    with pytest.raises(NotFound):
        await store.delete(ACTIONS, ns, "hello")


async def test_create_twice_is_a_conflict(store: EntityStore, ns: str) -> None:
    await store.create(TRIGGERS, Trigger(namespace=ns, name="t"))
    with pytest.raises(Conflict, match="resource already exists"):
        await store.create(TRIGGERS, Trigger(namespace=ns, name="t"))


async def test_concurrent_creates_let_exactly_one_win(store: EntityStore, ns: str) -> None:
    results = await asyncio.gather(
        *(store.create(ACTIONS, action(ns, "race", code=str(i))) for i in range(5)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if r not in winners)
    assert (await store.get(ACTIONS, ns, "race")).entity.exec == winners[0].entity.exec


async def test_concurrent_updates_with_one_revision_let_exactly_one_win(store: EntityStore, ns: str) -> None:
    base = await store.create(ACTIONS, action(ns, "contended"))
    first = action(ns, "contended", code="first")
    second = action(ns, "contended", code="second")
    results = await asyncio.gather(
        store.update(ACTIONS, first, base.revision),
        store.update(ACTIONS, second, base.revision),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], ConcurrentModification)
    assert failures[0].message == "Concurrent modification to resource detected."
    winner = next(r for r in results if not isinstance(r, BaseException))
    assert (await store.get(ACTIONS, ns, "contended")) == winner


async def test_stale_revision_update_and_delete_fail(store: EntityStore, ns: str) -> None:
    base = await store.create(PACKAGES, Package(namespace=ns, name="p"))
    await store.update(PACKAGES, base.entity, base.revision)
    with pytest.raises(ConcurrentModification):
        await store.update(PACKAGES, base.entity, base.revision)
    with pytest.raises(ConcurrentModification):
        await store.delete(PACKAGES, ns, "p", revision=base.revision)
    assert (await store.get(PACKAGES, ns, "p")).entity.name == "p"


async def test_a_name_is_unique_across_collections(store: EntityStore, ns: str) -> None:
    await store.create(ACTIONS, action(ns, "shared"))
    with pytest.raises(Conflict, match="resource already exists"):
        await store.create(TRIGGERS, Trigger(namespace=ns, name="shared"))
    with pytest.raises(Conflict):
        await store.create(PACKAGES, Package(namespace=ns, name="shared"))
    with pytest.raises(WrongCollection, match="not in this collection"):
        await store.get(TRIGGERS, ns, "shared")
    with pytest.raises(WrongCollection):
        await store.delete(TRIGGERS, ns, "shared")
    assert (await store.get(ACTIONS, ns, "shared")).entity.name == "shared"


async def test_delete_then_recreate_in_another_collection(store: EntityStore, ns: str) -> None:
    await store.create(ACTIONS, action(ns, "phoenix"))
    await store.delete(ACTIONS, ns, "phoenix")
    reborn = await store.create(TRIGGERS, Trigger(namespace=ns, name="phoenix"))
    assert (await store.get(TRIGGERS, ns, "phoenix")) == reborn
    await store.delete(TRIGGERS, ns, "phoenix")
    await store.create(ACTIONS, action(ns, "phoenix"))
    assert (await store.get(ACTIONS, ns, "phoenix")).entity.name == "phoenix"


async def test_list_is_newest_first_and_scoped(store: EntityStore, ns: str) -> None:
    other_ns = ns + "x"  # shares a prefix: must not leak into `ns`
    for name in ("a", "b", "c"):
        await store.create(ACTIONS, action(ns, name))
    await store.create(ACTIONS, action(other_ns, "z"))
    await store.create(TRIGGERS, Trigger(namespace=ns, name="t"))
    await store.create(ACTIONS, action(f"{ns}/pkg", "inner"))
    a = await store.get(ACTIONS, ns, "a")
    await store.update(ACTIONS, a.entity, a.revision)  # now the most recently updated

    assert [x.name for x in await store.list(ACTIONS, ns)] == ["a", "c", "b"]
    assert [x.name for x in await store.list(TRIGGERS, ns)] == ["t"]
    assert [x.name for x in await store.list(ACTIONS, other_ns)] == ["z"]
    assert await store.list(RULES, ns) == []
    assert [x.name for x in await store.list(ACTIONS, ns, prefix="b")] == ["b"]
    inner = await store.list_in_package(ns, "pkg")
    assert [(x.namespace, x.name) for x in inner] == [(f"{ns}/pkg", "inner")]
    # Listings answer summaries: the entity without its code (broker/entity_summary.py).
    assert summary_of((await store.get(ACTIONS, ns, "pkg/inner")).entity) == inner[0]


async def test_empty_and_deleted_only_namespaces_list_nothing(store: EntityStore, ns: str) -> None:
    assert await store.list(ACTIONS, ns) == []
    await store.create(
        RULES,
        Rule(
            namespace=ns,
            name="r",
            trigger=FullyQualifiedName(path=ns, name="t"),
            action=FullyQualifiedName(path=ns, name="a"),
        ),
    )
    await store.delete(RULES, ns, "r")
    assert await store.list(RULES, ns) == []


def test_in_listing_separates_top_level_and_packages() -> None:
    assert in_listing("a", None, None)
    assert not in_listing("pkg/a", None, None)
    assert in_listing("pkg/a", "pkg", None)
    assert not in_listing("pkg2/a", "pkg", None)
    assert in_listing("abc", None, "ab")
    assert not in_listing("abc", None, "b")


async def test_namespaces_round_trip(store: EntityStore, ns: str) -> None:
    with pytest.raises(NotFound):
        await store.get_namespace(ns)
    await store.put_namespace(Namespace(name=ns, created=1))
    limited = Namespace(name=ns, limits=NamespaceLimits(firesPerMinute=5), created=1)
    await store.put_namespace(limited)  # create-or-update
    assert await store.get_namespace(ns) == limited
    assert limited in await store.list_namespaces()
    await store.delete_namespace(ns)
    with pytest.raises(NotFound):
        await store.get_namespace(ns)
    assert all(n.name != ns for n in await store.list_namespaces())
    with pytest.raises(NotFound):
        await store.delete_namespace(ns)


async def test_keys_round_trip(store: EntityStore, ns: str) -> None:
    first, _ = make_auth_key(ns)
    second, _ = make_auth_key(ns)
    stranger, _ = make_auth_key(ns + "-other")
    for record in (first, second, stranger):
        await store.put_key(record)
    assert await store.find_key(first.uuid) == first
    mine = await store.keys_of(ns)
    assert {k.uuid for k in mine} == {first.uuid, second.uuid}
    await store.delete_key(first.uuid)
    assert await store.find_key(first.uuid) is None
    assert [k.uuid for k in await store.keys_of(ns)] == [second.uuid]
    assert await store.find_key(str(uuid.uuid4())) is None
    with pytest.raises(NotFound):
        await store.delete_key(first.uuid)


async def test_repeated_listings_never_miss_entries(store: EntityStore, ns: str) -> None:
    # Guards against "caught up" markers that fire before every entry arrived (nats-py's KV watch).
    for name in ("x", "y", "z"):
        await store.create(TRIGGERS, Trigger(namespace=ns, name=name))
    for _ in range(100):
        assert [t.name for t in await store.list(TRIGGERS, ns)] == ["z", "y", "x"]


# -- bodies too large for one KV value -------------------------------------------------------------------


def big_code(tag: str, mb: float = 3) -> str:
    return f"def main(a): return {{'tag': '{tag}'}}\n#" + "x" * int(mb * 1024 * 1024) + "\n"


async def blobs_of(store: EntityStore, bus: JetStreamBus, ns: str, name: str) -> list[str]:
    """The live blobs of one entity (named after its KV key)."""
    from broker import subjects

    objects = await bus.object_store(subjects.BLOBS_BUCKET)
    try:
        infos = await objects.list(ignore_deletes=True)
    except Exception:
        return []
    prefix = subjects.entity_key(ns, name) + "."
    return [info.name for info in infos if info.name.startswith(prefix)]


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[JetStreamBus]:
    async with JetStreamBus(nats_url) as bus:
        await bus.provision()
        yield bus


async def test_an_action_larger_than_a_kv_value_round_trips_and_leaves_no_blob_behind(
    bus: JetStreamBus, ns: str
) -> None:
    store = EntityStore(bus)
    created = await store.create(ACTIONS, action(ns, "big", big_code("one")))
    assert len(await blobs_of(store, bus, ns, "big")) == 1
    got = await store.get(ACTIONS, ns, "big")
    assert got.entity.exec.code == big_code("one") and got.revision == created.revision
    assert [a.name for a in await store.list(ACTIONS, ns)] == ["big"]
    # A new body replaces the old blob; a small one needs none.
    updated = await store.update(ACTIONS, action(ns, "big", big_code("two")), created.revision)
    assert (await store.get(ACTIONS, ns, "big")).entity.exec.code == big_code("two")
    assert len(await blobs_of(store, bus, ns, "big")) == 1
    small = await store.update(ACTIONS, action(ns, "big"), updated.revision)
    assert await blobs_of(store, bus, ns, "big") == []
    again = await store.update(ACTIONS, action(ns, "big", big_code("three")), small.revision)
    await store.delete(ACTIONS, ns, "big", again.revision)
    assert await blobs_of(store, bus, ns, "big") == []
    with pytest.raises(NotFound):
        await store.get(ACTIONS, ns, "big")


async def test_a_large_write_that_loses_a_revision_race_leaves_the_winner_intact(
    bus: JetStreamBus, ns: str
) -> None:
    store = EntityStore(bus)
    created = await store.create(ACTIONS, action(ns, "race", big_code("base")))
    await store.update(ACTIONS, action(ns, "race", big_code("winner")), created.revision)
    with pytest.raises(ConcurrentModification):
        await store.update(ACTIONS, action(ns, "race", big_code("loser")), created.revision)
    assert (await store.get(ACTIONS, ns, "race")).entity.exec.code == big_code("winner")
    assert len(await blobs_of(store, bus, ns, "race")) == 1, "the loser's blob is gone, the winner's kept"
    with pytest.raises(Conflict):
        await store.create(ACTIONS, action(ns, "race", big_code("dup")))
    assert len(await blobs_of(store, bus, ns, "race")) == 1
