"""Activation upkeep, by one broker at a time: counts kept folded and settled, records past retention deleted."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

from broker.activation_store import ActivationStore
from broker.clock import now_ms
from broker.entity_store import EntityStore
from broker.errors import NotFound, SquallError
from broker.namespaces import NamespaceLimits
from broker.periodic import Periodic

log = logging.getLogger("squall.activation_upkeep")

DAY_MS: Final = 86_400_000
LEASE: Final = "upkeep"
EVERY_S: Final = 5.0
# A sweep deletes at most BATCH records at a time and BATCHES_PER_STEP batches a step (10,000 records every
# 5 s, far above what the recorder writes on nx-27017), so that a backlog, e.g. after lowering a retention,
# is worked off without taking the store away from reads and writes for long.
BATCH: Final = 500
BATCHES_PER_STEP: Final = 20
# Renewed every step and before every sweep batch, so it need only outlast one batch's few writes; a broker
# that dies holding it delays the next step (and the counts of what it was writing) by at most this much.
LEASE_S: Final = 15.0
# A write's count change still pending after this long is looked at (a write batch takes well under a second):
# settled from the records once they are all stored (see ActivationCounts.settle_abandoned), or even if some
# are not after the longer wait, which only records whose messages were lost reach.
SETTLE_AFTER_MS: Final = 10_000
GIVE_UP_AFTER_MS: Final = 3_600_000

RetentionOf = Callable[[str], Awaitable[int]]


def retention_days(limits: NamespaceLimits, default: int) -> int:
    """How many days a namespace keeps its activation records: its own limit, else the system's."""
    return default if limits.activationRetentionDays is None else limits.activationRetentionDays


def retention_cutoff(now: int, days: int) -> int:
    """Records that started before this instant (epoch ms) are past a `days` retention."""
    return now - days * DAY_MS


def rotated(namespaces: list[str], after: str | None) -> list[str]:
    """`namespaces` (sorted) starting after the one a step's budget ran out on, so that a namespace with a
    large backlog does not keep the others waiting."""
    if after is None:
        return namespaces
    later = [n for n in namespaces if n > after]
    return later + [n for n in namespaces if n <= after]


def previous_owner_cutoff(retention_cutoff_ms: int, created_ms: int) -> int:
    """Records that started before a namespace's record was created belong to an earlier namespace of that
    name (deleted, then created anew): they go with the expired ones, so the new one starts empty."""
    return max(retention_cutoff_ms, created_ms)


def namespace_birth(store: EntityStore) -> RetentionOf:
    """When a namespace's record was created (epoch ms; 0 without a record, or for one from before `created`)."""

    async def created(namespace: str) -> int:
        try:
            return (await store.get_namespace(namespace)).created
        except NotFound:
            return 0

    return created


def namespace_retention(store: EntityStore, default_days: int) -> RetentionOf:
    """The retention of a namespace from its limits record (its `activationRetentionDays`), read at each
    sweep so that a change applies from the next one; a namespace without a record gets `default_days`."""

    async def days(namespace: str) -> int:
        try:
            limits = (await store.get_namespace(namespace)).limits
        except NotFound:
            limits = NamespaceLimits()
        return retention_days(limits, default_days)

    return days


class ActivationUpkeep:
    """`async with ActivationUpkeep(store, retention_of)`: every `every_s` seconds, whichever broker holds the
    upkeep lease settles count changes their writers left pending, folds the settled ones into the totals (so
    that a count reads a handful of documents), and deletes the records that have outlived their namespace's
    retention, oldest first.

    Deleting by age on the `(namespace, start, …)` index costs nothing on reads, unlike a TTL index, which
    nx-27017 enforces by scanning for expired records before every query.
    """

    def __init__(
        self,
        store: ActivationStore,
        retention_of: RetentionOf,
        *,
        every_s: float = EVERY_S,
        batch: int = BATCH,
        batches_per_step: int = BATCHES_PER_STEP,
        lease_s: float = LEASE_S,
        born_of: RetentionOf | None = None,
    ) -> None:
        self.store = store
        self.retention_of = retention_of
        # A namespace's creation instant (`namespace_birth`): older records were a deleted namesake's.
        self.born_of = born_of
        self.batch = batch
        self.batches_per_step = batches_per_step
        self.lease_ms = int(lease_s * 1000)
        self.owner = uuid.uuid4().hex
        self.deleted = 0
        self._stopping = False
        self._resume_after: str | None = None
        self._periodic = Periodic(self.step, every_s, name="activation-upkeep", at_once=True)

    async def __aenter__(self) -> ActivationUpkeep:
        await self._periodic.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True  # a sweep in progress stops after its current batch
        await self._periodic.__aexit__(exc_type, exc, tb)
        try:
            await self.store.release_lease(LEASE, self.owner)
        except SquallError as error:
            log.warning("could not release the activation upkeep lease: %s", error.message)

    async def step(self) -> None:
        """One round of upkeep, if this process holds the lease; failures are logged and retried next step."""
        try:
            if await self.store.take_lease(LEASE, self.owner, self.lease_ms):
                # The counts first: a sweep that fails must not keep them from being folded.
                now = now_ms()
                await self.store.tend_counts(now - SETTLE_AFTER_MS, now - GIVE_UP_AFTER_MS)
                self.deleted += await self.sweep()
        except SquallError as error:
            log.warning("activation upkeep: %s; retrying in the next step", error.message)
        except Exception:
            log.exception("activation upkeep failed; retrying in the next step")

    async def sweep(self) -> int:
        """Delete records past retention, at most `batches_per_step` batches; returns how many."""
        budget = self.batches_per_step
        deleted = 0
        now = now_ms()
        for namespace in rotated(await self.store.namespaces(), self._resume_after):
            cutoff = retention_cutoff(now, await self.retention_of(namespace))
            if self.born_of is not None:
                cutoff = previous_owner_cutoff(cutoff, await self.born_of(namespace))
            while not self._stopping:
                if budget == 0:
                    self._resume_after = namespace  # unfinished: the next step starts with the others
                    return deleted
                if not await self.store.take_lease(LEASE, self.owner, self.lease_ms):
                    return deleted  # another broker sweeps now: two sweepers could count a record out twice
                old = await self.store.oldest(namespace, cutoff, self.batch)
                if not old:
                    break
                budget -= 1
                gone = await self.store.delete(namespace, old)
                deleted += gone
                if len(old) < self.batch or gone == 0:  # the rest waits for its write to be counted
                    break
        self._resume_after = None
        return deleted
