"""The activation upkeep against nx-27017: retention by age per namespace, in bounded batches, one broker at
a time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from broker.activation_store import ActivationStore
from broker.activation_upkeep import (
    DAY_MS,
    LEASE,
    ActivationUpkeep,
    RetentionOf,
    namespace_birth,
    namespace_retention,
    previous_owner_cutoff,
)
from broker.admin import create_namespace, delete_namespace
from broker.clock import now_ms
from broker.entity_store import EntityStore
from broker.namespaces import NamespaceLimits
from tests.integration.test_activation_store import NOW, record


@pytest.fixture
async def activations(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[ActivationStore]:
    async with ActivationStore(mongo_uri, mongo_db_name) as store:
        await store.provision()
        yield store


def days_of(table: dict[str, int], default: int = 7) -> RetentionOf:
    async def retention(namespace: str) -> int:
        return table.get(namespace, default)

    return retention


async def test_records_past_their_namespaces_retention_are_deleted_oldest_first_in_batches(
    activations: ActivationStore,
) -> None:
    short = [record(NOW - 2 * DAY_MS - i, namespace="short") for i in range(7)]  # past 1 day
    short_kept = record(NOW - DAY_MS // 2, namespace="short")
    long = [record(NOW - 2 * DAY_MS - i, namespace="long") for i in range(3)]  # within 3 days
    long_old = record(NOW - 4 * DAY_MS, namespace="long")
    await activations.insert_many([*short, short_kept, *long, long_old])
    upkeep = ActivationUpkeep(activations, days_of({"short": 1, "long": 3}), batch=3, batches_per_step=2)

    assert await upkeep.sweep() == 4  # "long": its one old record; "short": one batch, then out of budget
    assert await upkeep.sweep() == 4  # the rest of "short": a full batch and the last one
    assert await upkeep.sweep() == 0
    assert [r.activationId for r in await activations.list("short")] == [short_kept.activationId]
    assert {r.activationId for r in await activations.list("long")} == {r.activationId for r in long}


async def test_a_backlog_in_one_namespace_does_not_keep_the_others_waiting(
    activations: ActivationStore,
) -> None:
    await activations.insert_many([record(NOW - 10 * DAY_MS - i, namespace="a") for i in range(9)])
    await activations.insert_many([record(NOW - 10 * DAY_MS, namespace="b")])
    upkeep = ActivationUpkeep(activations, days_of({}), batch=3, batches_per_step=1)
    assert await upkeep.sweep() == 3  # "a" spent the step's budget
    assert await upkeep.sweep() == 1  # so "b" goes first in the next
    assert await activations.count("b") == 0
    assert await activations.count("a") == 6


async def test_only_the_lease_holder_sweeps_and_a_stopped_one_hands_over(
    activations: ActivationStore,
) -> None:
    await activations.insert_many([record(NOW - 10 * DAY_MS - i) for i in range(4)])
    first = ActivationUpkeep(activations, days_of({}), every_s=3600)
    second = ActivationUpkeep(activations, days_of({}), every_s=3600)
    await first.step()
    await second.step()
    assert (first.deleted, second.deleted) == (4, 0)
    assert not await activations.take_lease(LEASE, second.owner, 60_000)
    async with first:
        pass
    # The first released its lease on exit: the second takes it at once, not after it expires.
    assert await activations.take_lease(LEASE, second.owner, 60_000)


async def test_an_expired_lease_is_taken_over(activations: ActivationStore) -> None:
    assert await activations.take_lease("x", "dead", 1)
    await asyncio.sleep(0.01)
    assert await activations.take_lease("x", "alive", 60_000)
    assert not await activations.take_lease("x", "dead", 60_000)
    assert await activations.take_lease("x", "alive", 60_000)  # renewed by its holder


async def test_the_upkeep_stops_promptly(activations: ActivationStore) -> None:
    started = time.monotonic()
    async with ActivationUpkeep(activations, days_of({}), every_s=3600):
        pass
    assert time.monotonic() - started < 2


async def test_namespaces_are_found_through_the_index(activations: ActivationStore) -> None:
    await activations.insert_many([record(NOW, namespace=ns) for ns in ("b", "a", "c", "a", "b")])
    assert await activations.namespaces() == ["a", "b", "c"]


async def test_a_namespaces_retention_comes_from_its_limits(store: EntityStore) -> None:
    mine, other = f"ret-{uuid.uuid4().hex[:8]}", f"ret-{uuid.uuid4().hex[:8]}"
    await create_namespace(store, mine, limits=NamespaceLimits(activationRetentionDays=2))
    await create_namespace(store, other)
    retention = namespace_retention(store, 7)
    assert await retention(mine) == 2
    assert await retention(other) == 7
    assert await retention("no-such-namespace") == 7


async def test_a_recreated_namespace_loses_its_namesakes_records(
    activations: ActivationStore, store: EntityStore
) -> None:
    ns = f"again-{uuid.uuid4().hex[:8]}"
    await create_namespace(store, ns)
    old = [record(now_ms() - 1000 - i, namespace=ns) for i in range(3)]
    await activations.insert_many(old)
    await delete_namespace(store, ns)
    await create_namespace(store, ns)  # created after every record above
    new = record(now_ms() + 1000, namespace=ns)
    await activations.insert_many([new])
    born = namespace_birth(store)
    assert await born(ns) > max(r.start for r in old)
    assert await born("no-such-namespace") == 0
    upkeep = ActivationUpkeep(activations, days_of({}), born_of=born)
    assert await upkeep.sweep() == 3
    assert [r.activationId for r in await activations.list(ns)] == [new.activationId]


def test_the_previous_owners_records_are_cut_at_the_creation() -> None:
    assert previous_owner_cutoff(100, 0) == 100  # no creation instant: retention alone
    assert previous_owner_cutoff(100, 500) == 500
    assert previous_owner_cutoff(900, 500) == 900
