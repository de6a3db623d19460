"""Exact activation counts per namespace and per action or trigger, kept in step with the records they count.

Counting the records themselves takes time in proportion to their number (a million index entries take
~170 ms on nx-27017); these counts are read in a few milliseconds at any size. They stay exact across crashes,
redeliveries and retention without transactions (which nx-27017 and a standalone MongoDB lack) because every
change is first written as a *pending delta* that names the records it is about, and is settled from what the
records collection holds:

- a write batch inserts one pending delta per namespace it touches before it inserts its records. Each record
  carries the batch's id (`batch`), so which records this batch stored, as opposed to earlier copies of
  redelivered ones, can be read back at any time;
- after the insert the deltas are settled with what the insert reports it stored; a retention sweep writes
  negative deltas and settles them from which of the named records are gone;
- a delta left pending by a writer that died is settled later from the records, the answer its writer would
  have given, once every record it names is stored (the dead writer's insert can add none of them then:
  JetStream redelivers what it did not acknowledge, and whichever batch stores a record first is the one
  that counts it) (`settle_abandoned`);
- settled deltas are folded into one total per namespace under a generation check; the folded deltas' ids stay
  on the total until the deltas are deleted, so a reader never counts one twice.

A delta and a total hold one count per entity path (`entityPath`: `name` or `pkg/name`) as a list of pairs:
nx-27017 mishandles `$inc` on a dotted path and `$push` of a sub-document, so documents are only ever written
whole, and a list, unlike a sub-document, takes any entity name as it is (dots included).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import msgspec
from bson import ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from broker.clock import now_ms
from broker.subjects import (
    ACTIVATION_COUNT_DELTAS_COLLECTION,
    ACTIVATION_COUNTS_COLLECTION,
    ACTIVATION_META_COLLECTION,
)

log = logging.getLogger("squall.activation_counts")

# The field of a record naming the write batch that stored it.
BATCH: Final = "batch"
_COUNTED = "counted"  # the `_id` of the mark, in the meta collection, that the store's records are counted
# A reader retries when a fold changed the total under it; folds are seconds apart, so once is nearly always
# enough.
_READ_ATTEMPTS = 5
# How many settled deltas one fold takes in; the next fold takes the rest.
FOLD_LIMIT = 5000

Document = dict[str, Any]
PathCounts = list[tuple[str, int]]  # (entityPath, count), sorted by path


class CountDelta(msgspec.Struct, frozen=True, kw_only=True):
    """One write batch's or sweep's change to one namespace's counts."""

    id: str = msgspec.field(name="_id")  # f"{change}|{namespace}"
    namespace: str
    change: str  # the write batch's or the sweep's id
    sign: int  # +1: records `change` stored; -1: records it deleted
    # The signed count per entity path once settled; while pending, what it would be if every named record
    # were stored (or deleted).
    paths: PathCounts
    pending: bool = True
    # While pending, the records it names: their `_id`s (the activation id for records this version wrote, an
    # ObjectId for older ones), entity paths, and for a sweep the `batch` each had when it was chosen, which
    # tells a record the sweep deleted from a later copy of it stored again.
    ids: list[Any] = []
    id_paths: list[str] = []
    batches: list[str | None] = []
    at: int = 0  # epoch ms when written


class CountTotal(msgspec.Struct, frozen=True, kw_only=True):
    """The folded counts of one namespace."""

    id: str = msgspec.field(name="_id")  # the namespace
    paths: PathCounts = []
    gen: int = 0
    folded: list[str] = []  # the deltas the last fold took in, until they are deleted


class FoldPlan(msgspec.Struct, frozen=True, kw_only=True):
    leftovers: list[str]  # taken in by the previous fold, not yet deleted
    fold: list[str]
    paths: PathCounts  # the total's counts once `fold` is taken in


def tally(paths: Iterable[str], sign: int = 1) -> PathCounts:
    """Signed counts per path of the records at `paths`, sorted by path."""
    return sorted((path, sign * n) for path, n in Counter(paths).items())


def pending_deltas(
    change: str, sign: int, records: Iterable[tuple[Any, str, str, str | None]], at: int
) -> list[CountDelta]:
    """The deltas of one batch or sweep over `(record _id, namespace, entityPath, batch)`: one per namespace.
    A record named twice (a redelivery inside one batch) is counted once."""
    named: dict[str, dict[Any, tuple[str, str | None]]] = defaultdict(dict)
    for record_id, namespace, path, batch in records:
        named[namespace].setdefault(record_id, (path, batch))
    return [
        CountDelta(
            id=f"{change}|{namespace}",
            namespace=namespace,
            change=change,
            sign=sign,
            paths=tally((path for path, _ in by_id.values()), sign),
            ids=list(by_id),
            id_paths=[path for path, _ in by_id.values()],
            batches=[] if sign > 0 else [batch for _, batch in by_id.values()],
            at=at,
        )
        for namespace, by_id in named.items()
    ]


def done_paths(delta: CountDelta, done: Callable[[Any], bool]) -> PathCounts:
    """The signed counts per path of the records of a pending delta for which `done(_id)` holds."""
    return tally(
        (path for record_id, path in zip(delta.ids, delta.id_paths, strict=True) if done(record_id)),
        delta.sign,
    )


def settled_paths(delta: CountDelta, present: set[tuple[Any, str | None]]) -> PathCounts:
    """What a pending delta counts, given the `(_id, batch)` pairs the records collection holds now: the
    records its batch stored, or minus those its sweep removed."""
    if delta.sign > 0:
        return done_paths(delta, lambda record_id: (record_id, delta.change) in present)
    chosen = dict(zip(delta.ids, delta.batches, strict=True))
    return done_paths(delta, lambda record_id: (record_id, chosen[record_id]) not in present)


def count_of(total: CountTotal | None, deltas: Iterable[CountDelta], path: str = "") -> int:
    """A namespace's count (`path` ""), or one entity path's: its total, plus its settled deltas that no fold
    has taken in yet."""
    folded = set(total.folded) if total else set()
    counts = [
        *(total.paths if total else []),
        *(p for d in deltas if not d.pending and d.id not in folded for p in d.paths),
    ]
    return sum(n for p, n in counts if not path or p == path)


def fold_plan(total: CountTotal | None, settled: Iterable[CountDelta]) -> FoldPlan:
    folded = set(total.folded) if total else set()
    deltas = list(settled)
    new = [d for d in deltas if d.id not in folded and not d.pending]
    merged: Counter[str] = Counter(dict(total.paths) if total else {})
    for delta in new:
        merged.update(dict(delta.paths))
    return FoldPlan(
        leftovers=[d.id for d in deltas if d.id in folded],
        fold=[d.id for d in new],
        paths=sorted((path, n) for path, n in merged.items() if n),  # a path with no records left is dropped
    )


def _to_doc(struct: msgspec.Struct) -> Document:
    doc: Document = msgspec.to_builtins(struct, builtin_types=(ObjectId,))
    return doc


def _delta(doc: Mapping[str, Any]) -> CountDelta:
    # strict=False: nx-27017 hands a stored boolean back as 0 or 1.
    return msgspec.convert(doc, CountDelta, strict=False)


def _total(doc: Mapping[str, Any] | None) -> CountTotal | None:
    return None if doc is None else msgspec.convert(doc, CountTotal, strict=False)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_WITHOUT_NAMES = {"ids": 0, "id_paths": 0, "batches": 0}  # what a reader or a fold never needs


class ActivationCounts:
    """The counts beside the `records` collection; every method is safe to run in several processes at once,
    except that settling a sweep's deltas from the records assumes one sweeper (the upkeep lease)."""

    def __init__(self, database: AsyncDatabase[Document], records: AsyncCollection[Document]) -> None:
        self.records = records
        self.totals: AsyncCollection[Document] = database[ACTIVATION_COUNTS_COLLECTION]
        self.deltas: AsyncCollection[Document] = database[ACTIVATION_COUNT_DELTAS_COLLECTION]
        self.meta: AsyncCollection[Document] = database[ACTIVATION_META_COLLECTION]

    async def provision(self, hint_by_namespace: Any, hint_by_path: Any) -> None:
        """Create the deltas' index and, on a store written before counts were kept, count its records once.

        The recount runs before this process writes; a second process starting on the same old store at the
        same moment could overwrite a total the first one had already moved on from.
        """
        await self.deltas.create_index([("namespace", ASCENDING)], name="namespace")
        if await self.meta.find_one({"_id": _COUNTED}) is None:
            namespaces = await self.rebuild(hint_by_namespace, hint_by_path)
            if namespaces:
                log.info("counted the activation records of %d namespaces", namespaces)
            with contextlib.suppress(DuplicateKeyError):
                await self.meta.insert_one({"_id": _COUNTED, "at": now_ms()})

    # -- writes ------------------------------------------------------------------------------------------

    async def begin(self, deltas: list[CountDelta]) -> None:
        """Record the intended changes, before the records are written or deleted."""
        if deltas:
            await self.deltas.insert_many([_to_doc(d) for d in deltas], ordered=False)

    async def settle(self, deltas: list[CountDelta], done: Callable[[Any], bool]) -> None:
        """Settle deltas with what their writer knows it did: `done(_id)` for each record it named."""
        exact = []
        for delta in deltas:
            paths = done_paths(delta, done)
            if paths == delta.paths:
                exact.append(delta.id)
            else:
                await self._settle_one(delta, paths)
        if exact:
            await self.deltas.update_many(
                {"_id": {"$in": exact}, "pending": {"$eq": True}},
                {"$set": {"pending": False}, "$unset": {"ids": "", "id_paths": "", "batches": ""}},
            )

    async def settle_from_records(self, deltas: list[CountDelta]) -> None:
        """Settle deltas from which of their records the records collection holds now."""
        for delta in deltas:
            await self._settle_one(delta, settled_paths(delta, await self._present(delta)))

    async def _present(self, delta: CountDelta) -> set[tuple[Any, str | None]]:
        """The `(_id, batch)` of the records a delta names that the records collection holds."""
        present: set[tuple[Any, str | None]] = set()
        for chunk in _chunks(delta.ids, 500):
            found = await self.records.find({"_id": {"$in": chunk}}, {"_id": 1, BATCH: 1}).to_list()
            present.update((doc["_id"], doc.get(BATCH)) for doc in found)
        return present

    async def _settle_one(self, delta: CountDelta, paths: PathCounts) -> None:
        await self.deltas.update_one(
            {"_id": delta.id, "pending": {"$eq": True}},
            {
                "$set": {"paths": paths, "pending": False},
                "$unset": {"ids": "", "id_paths": "", "batches": ""},
            },
        )

    async def settle_abandoned(self, written_before: int, given_up_before: int, limit: int = 1000) -> int:
        """Settle from the records what writers left pending; returns how many deltas. Call it holding the
        upkeep lease, between sweeps.

        - A write batch's delta written before `written_before` (epoch ms), once every record it names is
          stored: its writer is gone or done, and cannot store any of them any more. One written before
          `given_up_before` is settled even if some never came back (their messages were lost).
        - Every sweep's delta: no sweep is in flight between sweeps, so one pending was left by a sweeper that
          lost the lease. It is settled before the next sweep, or a record it named and left could be deleted
          by the next one and counted out by both.

        A write's delta, while pending, keeps its records from being swept (`pending_batches`), or settling
        it from the records would miss them.
        """
        writes = {"pending": {"$eq": True}, "sign": {"$eq": 1}, "at": {"$lt": written_before}}
        sweeps = {"pending": {"$eq": True}, "sign": {"$eq": -1}}
        settled = 0
        for delta in [_delta(d) for d in await self.deltas.find(writes, limit=limit).to_list()]:
            present = await self._present(delta)
            if delta.at < given_up_before or {record_id for record_id, _ in present} >= set(delta.ids):
                await self._settle_one(delta, settled_paths(delta, present))
                settled += 1
        left = [_delta(d) for d in await self.deltas.find(sweeps, limit=limit).to_list()]
        await self.settle_from_records(left)
        if settled or left:
            log.info("settled %d activation count changes their writers left pending", settled + len(left))
        return settled + len(left)

    async def pending_batches(self, namespace: str, batches: Iterable[str | None]) -> set[str]:
        """Those of the write `batches` whose delta for `namespace` is still pending (see settle_abandoned)."""
        ids = [f"{batch}|{namespace}" for batch in {b for b in batches if b}]
        if not ids:
            return set()
        query = {"_id": {"$in": ids}, "pending": {"$eq": True}}
        return {doc["change"] for doc in await self.deltas.find(query, {"change": 1}).to_list()}

    async def fold(self, limit: int = FOLD_LIMIT) -> int:
        """Take settled deltas into their namespaces' totals; returns how many were taken in."""
        docs = await self.deltas.find({"pending": {"$eq": False}}, _WITHOUT_NAMES, limit=limit).to_list()
        by_namespace: dict[str, list[CountDelta]] = defaultdict(list)
        for doc in docs:
            delta = _delta(doc)
            by_namespace[delta.namespace].append(delta)
        folded = 0
        for namespace, deltas in by_namespace.items():
            folded += await self._fold(namespace, deltas)
        return folded

    async def _fold(self, namespace: str, deltas: list[CountDelta]) -> int:
        total = _total(await self.totals.find_one({"_id": namespace}))
        plan = fold_plan(total, deltas)
        if plan.leftovers:
            # They are in the total already; deleted before `folded` forgets them, or they would count twice.
            await self.deltas.delete_many({"_id": {"$in": plan.leftovers}})
        if not plan.fold:
            return 0
        gen = total.gen if total else 0
        new = CountTotal(id=namespace, paths=plan.paths, gen=gen + 1, folded=plan.fold)
        try:
            result = await self.totals.replace_one({"_id": namespace, "gen": gen}, _to_doc(new), upsert=True)
        except DuplicateKeyError:
            return 0  # another process folded this namespace since we read it; the next fold takes these in
        if result.matched_count == 0 and result.upserted_id is None:
            return 0
        await self.deltas.delete_many({"_id": {"$in": plan.fold}})
        return len(plan.fold)

    # -- reads -------------------------------------------------------------------------------------------

    async def count(self, namespace: str, path: str = "") -> int:
        """The number of records of a namespace (`path` ""), or of one entity path in it."""
        n = 0
        for _ in range(_READ_ATTEMPTS):
            total = _total(await self.totals.find_one({"_id": namespace}))
            deltas = await self.deltas.find({"namespace": {"$eq": namespace}}, _WITHOUT_NAMES).to_list()
            n = count_of(total, (_delta(d) for d in deltas), path)
            again = await self.totals.find_one({"_id": namespace}, {"gen": 1})
            # Unchanged generation: no fold moved deltas into the total between the two reads.
            if (again or {}).get("gen", 0) == (total.gen if total else 0):
                return n
        return n

    # -- migration ---------------------------------------------------------------------------------------

    async def rebuild(self, hint_by_namespace: Any, hint_by_path: Any) -> int:
        """Recount every namespace from the records (written before counts were kept); returns how many.

        Distinct namespaces and paths are found by stepping through the list indexes (one index probe per
        value, where `distinct` would read every record on nx-27017); each count is an index range count.
        """
        namespaces = 0
        namespace: str | None = ""
        while (
            namespace := await self._next(hint_by_namespace, "namespace", {}, namespace or "")
        ) is not None:
            scope = {"namespace": {"$eq": namespace}}
            paths: PathCounts = []
            path: str | None = ""
            while (path := await self._next(hint_by_path, "entityPath", scope, path or "")) is not None:
                paths.append((path, await self._count({**scope, "entityPath": {"$eq": path}}, hint_by_path)))
            total = CountTotal(id=namespace, paths=paths)
            with contextlib.suppress(DuplicateKeyError):
                await self.totals.replace_one({"_id": namespace}, _to_doc(total), upsert=True)
            namespaces += 1
        return namespaces

    async def _next(self, hint: Any, field: str, scope: Document, after: str) -> str | None:
        """The smallest value of `field` above `after` within `scope`: one index probe."""
        query = {**scope, field: {"$gt": after}}
        sort = [*((f, ASCENDING) for f in scope), (field, ASCENDING)]
        doc = await self.records.find_one(query, {"_id": 0, field: 1}, sort=sort, hint=hint)
        value = None if doc is None else doc.get(field)
        return value if isinstance(value, str) else None

    async def _count(self, query: Document, hint: Any) -> int:
        reply = await self.records.database.command("count", self.records.name, query=query, hint=dict(hint))
        return int(reply["n"])
