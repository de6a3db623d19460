"""Exact activation counts per namespace and per action or trigger, kept in step with the records they count.

Counting the records themselves costs time in proportion to their number (a million index entries take
~170 ms on nx-27017, more on MongoDB); these counts are read in a few milliseconds at any size. They stay exact
across crashes, redeliveries and retention without transactions (which nx-27017 and a standalone MongoDB
lack) because every change is first written as a *pending delta* that names the records it is about, and is
settled from what the records collection holds:

- a write batch inserts one pending delta per key it touches (its namespaces, and each `entityPath` in them)
  before it inserts its records. Each record carries the batch's id (`batch`), so which records this batch
  stored, as opposed to earlier copies of redelivered ones, can be read back at any time;
- after the insert the deltas are settled with what the insert reports it stored; a retention sweep writes
  negative deltas and settles them from which of the named records are gone;
- a delta left pending by a writer that died is settled later from the records, the answer its writer would
  have given (`settle_abandoned`);
- settled deltas are folded into one total per key under a generation check; the folded deltas' ids stay on
  the total until the deltas are deleted, so a reader never counts one twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import msgspec
from bson import ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from broker.namespaces import now_ms
from broker.subjects import (
    ACTIVATION_COUNT_DELTAS_COLLECTION,
    ACTIVATION_COUNTS_COLLECTION,
    ACTIVATION_META_COLLECTION,
)

log = logging.getLogger("squall.activation_counts")

_COUNTED = "counted"  # the `_id` of the mark, in the meta collection, that the store's records are counted
# The field of a record naming the write batch that stored it.
BATCH: Final = "batch"

# A reader retries when a fold changed the total under it; folds are seconds apart, so once is nearly always
# enough.
_READ_ATTEMPTS = 5
# How many settled deltas one fold takes in; the next fold takes the rest.
FOLD_LIMIT = 5000

Document = dict[str, Any]


class CountDelta(msgspec.Struct, frozen=True, kw_only=True):
    """One write batch's or sweep's change to one key's count."""

    id: str = msgspec.field(name="_id")  # f"{change}|{key}"
    key: str
    namespace: str
    path: str  # `entityPath`, or "" for the namespace as a whole
    change: str  # the write batch's or the sweep's id
    sign: int  # +1: records `change` stored; -1: records it deleted
    n: int  # what it counts once settled; while pending, what it would if every named record were done
    pending: bool = True
    # While pending: the `_id`s of the records it names (the activation id for records this version wrote,
    # an ObjectId for older ones) and, for a sweep, the `batch` each record had when it was chosen, which
    # tells a record the sweep deleted from a later copy of it stored again.
    ids: list[Any] = []
    batches: list[str | None] = []
    at: int = 0  # epoch ms when written


class CountTotal(msgspec.Struct, frozen=True, kw_only=True):
    """The folded count of one key."""

    id: str = msgspec.field(name="_id")  # the key
    namespace: str = ""
    path: str = ""
    n: int = 0
    gen: int = 0
    folded: list[str] = []  # the deltas the last fold took in, until they are deleted


class FoldPlan(msgspec.Struct, frozen=True, kw_only=True):
    leftovers: list[str]  # taken in by the previous fold, not yet deleted
    fold: list[str]
    increment: int


def key_of(namespace: str, path: str = "") -> str:
    """A count's key; `|` appears in no namespace or entity name."""
    return f"{namespace}|{path}"


def pending_deltas(
    change: str, sign: int, records: Iterable[tuple[Any, str, str, str | None]], at: int
) -> list[CountDelta]:
    """The deltas of one batch or sweep over `(record _id, namespace, entityPath, batch)`: one per namespace
    and one per entity path. A record named twice (a redelivery inside one batch) is counted once."""
    named: dict[str, dict[Any, str | None]] = defaultdict(dict)
    where: dict[str, tuple[str, str]] = {}
    for record_id, namespace, path, batch in records:
        for key_path in ("", path):
            key = key_of(namespace, key_path)
            named[key].setdefault(record_id, batch)
            where[key] = (namespace, key_path)
    return [
        CountDelta(
            id=f"{change}|{key}",
            key=key,
            namespace=where[key][0],
            path=where[key][1],
            change=change,
            sign=sign,
            n=sign * len(ids),
            ids=list(ids),
            batches=[] if sign > 0 else list(ids.values()),
            at=at,
        )
        for key, ids in named.items()
    ]


def settled_n(delta: CountDelta, present: set[tuple[Any, str | None]]) -> int:
    """What a pending delta counts, given the `(_id, batch)` pairs the records collection holds now: the
    records its batch stored, or minus those its sweep removed."""
    if delta.sign > 0:
        return sum((record_id, delta.change) in present for record_id in delta.ids)
    return -sum(pair not in present for pair in zip(delta.ids, delta.batches, strict=True))


def count_of(total: CountTotal | None, deltas: Iterable[CountDelta]) -> int:
    """A key's count: its total, plus its settled deltas that no fold has taken in yet."""
    folded = set(total.folded) if total else set()
    base = total.n if total else 0
    return base + sum(d.n for d in deltas if not d.pending and d.id not in folded)


def fold_plan(total: CountTotal | None, settled: Iterable[CountDelta]) -> FoldPlan:
    folded = set(total.folded) if total else set()
    leftovers = [d.id for d in settled if d.id in folded]
    new = [d for d in settled if d.id not in folded and not d.pending]
    return FoldPlan(leftovers=leftovers, fold=[d.id for d in new], increment=sum(d.n for d in new))


def _to_doc(delta: CountDelta) -> Document:
    doc: Document = msgspec.to_builtins(delta, builtin_types=(ObjectId,))
    return doc


def _delta(doc: Mapping[str, Any]) -> CountDelta:
    # strict=False: nx-27017 hands a stored boolean back as 0 or 1.
    return msgspec.convert(doc, CountDelta, strict=False)


def _total(doc: Mapping[str, Any] | None) -> CountTotal | None:
    return None if doc is None else msgspec.convert(doc, CountTotal, strict=False)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ActivationCounts:
    """The counts beside the `records` collection; every method is safe to run in several processes at once."""

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
        await self.deltas.create_index([("key", ASCENDING)], name="key")
        if await self.meta.find_one({"_id": _COUNTED}) is None:
            keys = await self.rebuild(hint_by_namespace, hint_by_path)
            if keys:
                log.info("counted the activation records of %d namespaces and entities", keys)
            with contextlib.suppress(DuplicateKeyError):
                await self.meta.insert_one({"_id": _COUNTED, "at": now_ms()})

    # -- writes ------------------------------------------------------------------------------------------

    async def begin(self, deltas: list[CountDelta]) -> None:
        """Record the intended changes, before the records are written or deleted."""
        if deltas:
            await self.deltas.insert_many([_to_doc(d) for d in deltas], ordered=False)

    async def settle(self, deltas: list[CountDelta], done: Callable[[CountDelta], int]) -> None:
        """Settle deltas with what their writer knows was done (`done(delta)`, the signed count)."""
        exact = [d.id for d in deltas if done(d) == d.n]
        for chunk in _chunks(exact, 500):
            await self.deltas.update_many(
                {"_id": {"$in": chunk}, "pending": {"$eq": True}},
                {"$set": {"pending": False}, "$unset": {"ids": "", "batches": ""}},
            )
        for delta in deltas:
            if (n := done(delta)) != delta.n:
                await self._settle_one(delta, n)

    async def settle_from_records(self, deltas: list[CountDelta]) -> None:
        """Settle deltas from which of their records the records collection holds now."""
        for delta in deltas:
            present: set[tuple[Any, str | None]] = set()
            for chunk in _chunks(delta.ids, 500):
                found = await self.records.find({"_id": {"$in": chunk}}, {"_id": 1, BATCH: 1}).to_list()
                present.update((doc["_id"], doc.get(BATCH)) for doc in found)
            await self._settle_one(delta, settled_n(delta, present))

    async def _settle_one(self, delta: CountDelta, n: int) -> None:
        await self.deltas.update_one(
            {"_id": delta.id, "pending": {"$eq": True}},
            {"$set": {"n": n, "pending": False}, "$unset": {"ids": "", "batches": ""}},
        )

    async def settle_abandoned(self, written_before: int, limit: int = 1000) -> int:
        """Settle the deltas still pending that were written before `written_before` (epoch ms): their
        writers died, or took far longer than any write does."""
        query = {"pending": {"$eq": True}, "at": {"$lt": written_before}}
        deltas = [_delta(d) for d in await self.deltas.find(query, limit=limit).to_list()]
        if deltas:
            log.warning("settling %d activation count changes their writers left pending", len(deltas))
            await self.settle_from_records(deltas)
        return len(deltas)

    async def fold(self, limit: int = FOLD_LIMIT) -> int:
        """Take settled deltas into their keys' totals; returns how many were taken in."""
        docs = await self.deltas.find(
            {"pending": {"$eq": False}}, {"ids": 0, "batches": 0}, limit=limit
        ).to_list()
        by_key: dict[str, list[CountDelta]] = defaultdict(list)
        for doc in docs:
            delta = _delta(doc)
            by_key[delta.key].append(delta)
        folded = 0
        for key, deltas in by_key.items():
            folded += await self._fold_key(key, deltas)
        return folded

    async def _fold_key(self, key: str, deltas: list[CountDelta]) -> int:
        total = _total(await self.totals.find_one({"_id": key}))
        plan = fold_plan(total, deltas)
        if plan.leftovers:
            # They are in the total already; deleted before `folded` forgets them, or they would count twice.
            await self.deltas.delete_many({"_id": {"$in": plan.leftovers}})
        if not plan.fold:
            return 0
        gen = total.gen if total else 0
        update = {
            "$inc": {"n": plan.increment},
            "$set": {
                "gen": gen + 1,
                "folded": plan.fold,
                "namespace": deltas[0].namespace,
                "path": deltas[0].path,
            },
        }
        try:
            result = await self.totals.update_one({"_id": key, "gen": gen}, update, upsert=True)
        except DuplicateKeyError:
            return 0  # another process folded this key since we read it; the next fold takes these in
        if result.matched_count == 0 and result.upserted_id is None:
            return 0
        await self.deltas.delete_many({"_id": {"$in": plan.fold}})
        return len(plan.fold)

    # -- reads -------------------------------------------------------------------------------------------

    async def count(self, namespace: str, path: str = "") -> int:
        """The number of records of a namespace (`path` ""), or of one entity path in it."""
        key = key_of(namespace, path)
        n = 0
        for _ in range(_READ_ATTEMPTS):
            total = _total(await self.totals.find_one({"_id": key}))
            deltas = await self.deltas.find({"key": {"$eq": key}}, {"ids": 0, "batches": 0}).to_list()
            n = count_of(total, (_delta(d) for d in deltas))
            again = await self.totals.find_one({"_id": key}, {"gen": 1})
            # Unchanged generation: no fold moved deltas into the total between the two reads.
            if (again or {}).get("gen", 0) == (total.gen if total else 0):
                return n
        return n

    # -- migration ---------------------------------------------------------------------------------------

    async def rebuild(self, hint_by_namespace: Any, hint_by_path: Any) -> int:
        """Recount every key from the records (records written before counts were kept); returns the keys.

        Distinct namespaces and paths are found by stepping through the list indexes (one index probe per
        value, where `distinct` would read every record on nx-27017); each count is an index range count.
        """
        keys = 0
        namespace: str | None = ""
        while (
            namespace := await self._next(hint_by_namespace, "namespace", {}, namespace or "")
        ) is not None:
            n = await self._count({"namespace": {"$eq": namespace}}, hint_by_namespace)
            await self._set_total(namespace, "", n)
            keys += 1
            path: str | None = ""
            scope = {"namespace": {"$eq": namespace}}
            while (path := await self._next(hint_by_path, "entityPath", scope, path or "")) is not None:
                n = await self._count({**scope, "entityPath": {"$eq": path}}, hint_by_path)
                await self._set_total(namespace, path, n)
                keys += 1
        return keys

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

    async def _set_total(self, namespace: str, path: str, n: int) -> None:
        key = key_of(namespace, path)
        doc = msgspec.to_builtins(CountTotal(id=key, namespace=namespace, path=path, n=n))
        with contextlib.suppress(DuplicateKeyError):
            await self.totals.replace_one({"_id": key}, doc, upsert=True)
