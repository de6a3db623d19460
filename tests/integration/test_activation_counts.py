"""Activation counts against nx-27017: exact through duplicates, sweeps, folds, and writers that die between
any two of their steps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.activation_counts import pending_deltas
from broker.activation_store import ENTITY_PATH, ActivationStore, to_document
from broker.activation_upkeep import DAY_MS, ActivationUpkeep
from broker.activations import Activation, new_activation_id
from broker.namespaces import now_ms
from broker.subjects import ACTIVATION_COUNTS_COLLECTION, ACTIVATION_META_COLLECTION
from tests.integration.test_activation_store import NOW, record

LATER = now_ms() + 3_600_000  # "written before" an hour from now: every pending change is looked at


@pytest.fixture
async def activations(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[ActivationStore]:
    async with ActivationStore(mongo_uri, mongo_db_name) as store:
        await store.provision()
        yield store


async def counted(store: ActivationStore, namespace: str = "guest", name: str | None = None) -> int:
    return await store.count(namespace, name=name)


async def actual(store: ActivationStore, namespace: str = "guest", name: str | None = None) -> int:
    """The count from the records themselves (an index count of everything: slow at scale, exact)."""
    return len(await store.list(namespace, name=name, limit=0))


async def test_counts_follow_inserts_with_duplicates_in_and_across_batches(
    activations: ActivationStore,
) -> None:
    a = [record(NOW + i, name="a") for i in range(5)]
    b = [record(NOW + i, name="b", package="pkg") for i in range(3)]
    assert await activations.insert_many([*a, *b, a[0]]) == 8
    assert await activations.insert_many([a[1], b[2], record(NOW, name="a")]) == 1  # redeliveries + one new
    assert await activations.insert(a[3]) is False
    assert (await counted(activations), await counted(activations, name="a")) == (9, 6)
    assert await counted(activations, name="pkg/b") == 3
    assert await counted(activations, name="b") == 0
    assert await counted(activations, "other") == 0


async def test_a_writer_that_died_before_storing_its_records_counts_nothing(
    activations: ActivationStore,
) -> None:
    records = [record(NOW + i) for i in range(3)]
    batch = new_activation_id()
    deltas = pending_deltas(batch, 1, [(r.activationId, "guest", "hello", batch) for r in records], now_ms())
    await activations.counts.begin(deltas)  # ... and then the process died
    assert await counted(activations) == 0
    await activations.tend_counts(LATER, 0)
    assert await activations.counts.pending_batches("guest", [batch]) == {batch}, "its records may come yet"
    # The records are redelivered to another recorder, which stores and counts them once.
    assert await activations.insert_many(records) == 3
    assert await counted(activations) == 3
    await activations.tend_counts(LATER, 0)  # all its records are stored (by the other batch): settled, to 0
    assert await activations.counts.pending_batches("guest", [batch]) == set()
    assert await counted(activations) == 3


async def test_a_writer_whose_records_never_came_back_is_given_up_on(activations: ActivationStore) -> None:
    records = [record(NOW + i) for i in range(3)]
    batch = new_activation_id()
    docs = [to_document(r, batch) for r in records]
    await activations.counts.begin(
        pending_deltas(batch, 1, [(d["_id"], "guest", "hello", batch) for d in docs], 0)
    )
    await activations.collection.insert_many(docs[:2])  # ... died; the third record's message was lost
    await activations.tend_counts(LATER, 0)
    assert await counted(activations) == 0
    await activations.tend_counts(LATER, LATER)  # written before the give-up time
    assert (await counted(activations), await actual(activations)) == (2, 2)


async def test_a_writer_that_died_after_storing_its_records_is_settled_from_them(
    activations: ActivationStore,
) -> None:
    counted_before = [record(NOW - 1)]
    await activations.insert_many(counted_before)
    records = [record(NOW + i, name="x") for i in range(4)]
    batch = new_activation_id()
    docs = [to_document(r, batch) for r in records]
    deltas = pending_deltas(batch, 1, [(d["_id"], "guest", d[ENTITY_PATH], batch) for d in docs], now_ms())
    await activations.counts.begin(deltas)
    await activations.collection.insert_many(docs[:3])  # ... died halfway through the insert
    assert await counted(activations) == 1  # pending: not counted yet, never counted twice

    await activations.tend_counts(LATER, 0)
    assert await counted(activations) == 1  # the fourth record may still come from the dead insert
    # The whole batch is redelivered: three are duplicates, one is new.
    assert await activations.insert_many(records) == 1
    assert await counted(activations) == 2
    await activations.tend_counts(LATER, 0)  # every record is stored now: the dead batch is settled, to 3
    assert (await counted(activations), await counted(activations, name="x")) == (5, 4)
    assert await actual(activations) == 5


async def test_a_sweep_that_died_is_settled_from_which_records_are_gone(activations: ActivationStore) -> None:
    old = [record(NOW - 10 * DAY_MS - i) for i in range(4)]
    await activations.insert_many([*old, record(NOW)])
    chosen = await activations.oldest("guest", NOW - DAY_MS, 10)
    sweep = new_activation_id()
    named = [(d["_id"], "guest", d[ENTITY_PATH], d.get("batch")) for d in chosen]
    await activations.counts.begin(pending_deltas(sweep, -1, named, now_ms()))
    await activations.collection.delete_many({"_id": {"$in": [d["_id"] for d in chosen[:3]]}})  # ... and died
    # Before it is settled, a record the sweep deleted is stored again (an old message redelivered).
    again = next(r for r in old if r.activationId == chosen[0]["_id"])
    assert await activations.insert(again) is True

    await activations.tend_counts(0, 0)  # a sweep's change is settled at once, whatever its age
    assert (await counted(activations), await actual(activations)) == (3, 3)


async def test_the_upkeep_sweeps_and_folds_and_counts_stay_exact(activations: ActivationStore) -> None:
    await activations.insert_many([record(NOW - 10 * DAY_MS - i, name=f"a{i % 3}") for i in range(10)])
    await activations.insert_many([record(NOW - i, name=f"a{i % 3}") for i in range(7)])

    async def seven_days(namespace: str) -> int:
        return 7

    upkeep = ActivationUpkeep(activations, seven_days, batch=4)
    await upkeep.step()
    await upkeep.step()  # folds the sweep's changes
    assert upkeep.deleted == 10
    assert await activations.counts.deltas.count_documents({}) == 0, "everything folded"
    for name in (None, "a0", "a1", "a2"):
        assert await counted(activations, name=name) == await actual(activations, name=name)
    assert await counted(activations) == 7


async def test_folds_racing_each_other_and_the_writers_keep_counts_exact(
    activations: ActivationStore,
) -> None:
    async def write(n: int) -> None:
        for i in range(n):
            await activations.insert_many([record(NOW + i * 10 + j, name=f"a{j % 2}") for j in range(5)])

    async def fold() -> None:
        for _ in range(10):
            await activations.tend_counts(0, 0)

    await asyncio.gather(write(8), fold(), fold(), write(4))
    await activations.tend_counts(0, 0)
    assert (await counted(activations), await counted(activations, name="a0")) == (60, 36)


async def test_a_fold_that_died_before_deleting_what_it_took_in_does_not_count_it_twice(
    activations: ActivationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await activations.insert_many([record(NOW + i) for i in range(3)])
    deltas = activations.counts.deltas
    delete_many = deltas.delete_many

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the process died")

    monkeypatch.setattr(deltas, "delete_many", dies)
    with pytest.raises(ConnectionError):
        await activations.counts.fold()
    assert await counted(activations) == 3  # the deltas are still there, and in the total: counted once
    monkeypatch.setattr(deltas, "delete_many", delete_many)
    await activations.insert_many([record(NOW + 10)])
    await activations.tend_counts(0, 0)
    assert await counted(activations) == 4
    assert await deltas.count_documents({}) == 0


async def test_a_window_that_holds_every_record_is_answered_from_the_counts(
    activations: ActivationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await activations.insert_many([record(NOW + i) for i in range(5)])
    calls: list[tuple[str, str]] = []
    count = activations.counts.count

    async def spy(namespace: str, path: str = "") -> int:
        calls.append((namespace, path))
        return await count(namespace, path)

    monkeypatch.setattr(activations.counts, "count", spy)
    assert await activations.count("guest", since=0) == 5
    assert await activations.count("guest", name="hello", since=NOW, upto=NOW + 4) == 5
    assert len(calls) == 2
    assert await activations.count("guest", since=NOW + 1) == 4  # cuts the records: an index count
    assert await activations.count("guest", upto=NOW + 1) == 2
    assert len(calls) == 2


async def test_a_store_written_before_counts_were_kept_is_counted_once_on_provision(
    mongo_uri: str, mongo_db_name: str
) -> None:
    records: list[Activation] = [
        *(record(NOW + i, name=f"a{i % 4}") for i in range(11)),
        *(record(NOW + i, namespace="other", package="p") for i in range(3)),
    ]
    async with ActivationStore(mongo_uri, mongo_db_name) as store:
        # as an earlier version stored them: ObjectId `_id`s, no batch, no counts
        await store.collection.insert_many(
            [{k: v for k, v in to_document(r).items() if k != "_id"} for r in records]
        )
        await store.provision()
        assert (await counted(store), await counted(store, name="a1"), await counted(store, "other")) == (
            11,
            3,
            3,
        )
        assert await counted(store, "other", name="p/hello") == 3
        # Marked as counted: a second provision does not count again (nor double anything).
        await store.collection.database[ACTIVATION_COUNTS_COLLECTION].delete_many({})
        await store.provision()
        assert await counted(store) == 0
        assert await store.collection.database[ACTIVATION_META_COLLECTION].find_one({"_id": "counted"})
        # Records of an earlier version are swept and counted out like any other.
        await store.collection.database[ACTIVATION_META_COLLECTION].delete_many({})
        await store.collection.database[ACTIVATION_COUNTS_COLLECTION].delete_many({})
        await store.provision()
        old = await store.oldest("guest", NOW + 100, 5)
        assert await store.delete("guest", old) == 5
        assert await counted(store) == 6


async def seven_days(namespace: str) -> int:
    return 7


async def test_records_of_a_write_not_yet_counted_are_not_swept_until_it_is(
    activations: ActivationStore,
) -> None:
    """Settling a dead writer's delta from the records would miss records a sweep had deleted meanwhile."""
    old = [record(NOW - 10 * DAY_MS - i) for i in range(3)]
    batch = new_activation_id()
    docs = [to_document(r, batch) for r in old]
    await activations.counts.begin(
        pending_deltas(batch, 1, [(d["_id"], "guest", "hello", batch) for d in docs], now_ms())
    )
    await activations.collection.insert_many(docs)  # ... and the writer died before settling
    await activations.insert(record(NOW - 10 * DAY_MS - 5))  # an old record, counted
    upkeep = ActivationUpkeep(activations, seven_days)
    await upkeep.step()
    assert upkeep.deleted == 1
    assert await actual(activations) == 3  # the uncounted ones wait

    await activations.tend_counts(LATER, 0)  # all its records are stored: settled (the upkeep waits 10 s)
    assert await counted(activations) == 3
    await upkeep.step()
    assert (upkeep.deleted, await counted(activations), await actual(activations)) == (4, 0, 0)


async def test_a_dead_sweepers_change_is_settled_before_the_next_sweep(activations: ActivationStore) -> None:
    """Otherwise the next sweep deletes what the dead one left, and both count it out."""
    await activations.insert_many([record(NOW - 10 * DAY_MS - i) for i in range(4)])
    chosen = await activations.oldest("guest", NOW - DAY_MS, 10)
    named = [(d["_id"], "guest", d[ENTITY_PATH], d.get("batch")) for d in chosen]
    await activations.counts.begin(pending_deltas(new_activation_id(), -1, named, now_ms()))
    await activations.collection.delete_many({"_id": chosen[0]["_id"]})  # ... and the sweeper died

    await ActivationUpkeep(activations, seven_days).step()  # a fresh change, but no sweep is in flight
    assert (await counted(activations), await actual(activations)) == (0, 0)
