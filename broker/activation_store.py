"""Activation records in MongoDB (PyMongo async API): idempotent batched writes, indexed reads, bounded deletes."""

from __future__ import annotations

import builtins
import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from broker.activation_counts import BATCH, ActivationCounts, pending_deltas
from broker.activations import Activation, entity_path, new_activation_id, validate_activation_id
from broker.clock import now_ms
from broker.codec import decode, encode
from broker.config import Settings
from broker.errors import BadRequest, InternalError, NotFound, SquallError, Unavailable
from broker.subjects import ACTIVATION_META_COLLECTION, ACTIVATIONS_COLLECTION

log = logging.getLogger("squall.activation_store")

DUPLICATE_KEY = 11000
# Fields the store adds to a record's document; never part of the record itself.
ENTITY_PATH = "entityPath"
# The whole record as JSON text. Results and annotations are the users' JSON, which BSON cannot always
# hold (integers past 64 bits, `$`-prefixed or dotted keys); one such record must never block the
# recorder. The queried fields are kept beside it as real BSON.
RECORD = "record"
# The record's sequence on the ACTIVATIONS stream: its position in a live stream (api/routes/activation_stream.py),
# so that a position older than what JetStream still keeps is served from here, in the same order.
POSITION = "streamSeq"
_QUERIED = ("namespace", "name", "activationId", "start")
_PROJECTION = {"_id": 0, RECORD: 1, "activationId": 1}  # only what a read decodes
# `activationId` breaks ties between records of the same millisecond, so that `skip` pages are stable; unlike
# `_id` it is part of the list indexes, so the whole order comes out of the index.
_NEWEST_FIRST = [("start", DESCENDING), ("activationId", DESCENDING)]

# Each list query is served by one index end to end: equality on its prefix, `since`/`upto` as a range on
# `start`, and the newest-first order, so the first page costs the same at any size of the collection.
BY_NAMESPACE = [("namespace", ASCENDING), ("start", DESCENDING), ("activationId", DESCENDING)]
BY_PATH = [
    ("namespace", ASCENDING),
    (ENTITY_PATH, ASCENDING),
    ("start", DESCENDING),
    ("activationId", DESCENDING),
]
# A namespace's records in stream order: resuming a live stream from a position JetStream no longer holds.
BY_POSITION = [("namespace", ASCENDING), (POSITION, ASCENDING)]
# Indexes earlier versions created. The list indexes without `activationId` would only cost writes now; the
# TTL index on `expiresAt` costs every read on nx-27017, which purges expired records before each query with
# a scan (a get by id: 1 ms without it, 360 ms with it at 200k records). Retention is the upkeep's sweep now.
_SUPERSEDED = {("namespace", "start"), ("namespace", ENTITY_PATH, "start"), ("expiresAt",)}

Document = dict[str, Any]


def to_document(record: Activation, batch: str | None = None, position: int | None = None) -> Document:
    """The stored form: the record as JSON, its queried fields and the `name=` path.

    `_id` is the activation id: unique like `activationId`, and the one field nx-27017 can look many records up
    by at once (`$in` on any other field reads every record), which settling counts and sweeping need.
    `batch` names the write that stored the record; its count changes are settled from it. `position` is its
    ACTIVATIONS stream sequence, when it came from the stream.
    """
    doc: Document = {"_id": record.activationId}
    doc.update((field, getattr(record, field)) for field in _QUERIED)
    doc[RECORD] = encode(record).decode()
    doc[ENTITY_PATH] = entity_path(record)
    if batch is not None:
        doc[BATCH] = batch
    if position is not None:
        doc[POSITION] = position
    return doc


def from_document(doc: Mapping[str, Any]) -> Activation:
    try:
        return decode(doc[RECORD], Activation)
    except (KeyError, BadRequest) as exc:  # a bad stored document is our fault, not the client's
        reason = exc.message if isinstance(exc, BadRequest) else "no record field"
        raise InternalError(f"corrupt activation record {doc.get('activationId')!r}: {reason}") from None


def eq(value: str) -> Document:
    """An equality test that an index serves on both stores.

    nx-27017 translates a bare `{field: value}` into "equal, or an array containing it", an OR that no SQLite
    index can serve, so every such query scans the collection (unless the field happens to have an index of
    its own); `$eq` compiles to a plain comparison. On MongoDB both forms mean the same for scalar fields.
    """
    return {"$eq": value}


def list_filter(
    namespace: str, *, name: str | None = None, since: int | None = None, upto: int | None = None
) -> Document:
    """The query of a list or count: `since`/`upto` are inclusive epoch ms on `start`."""
    query: Document = {"namespace": eq(namespace)}
    if name:
        query[ENTITY_PATH] = eq(name)
    bounds: Document = {}
    if since is not None:
        bounds["$gte"] = since
    if upto is not None:
        bounds["$lte"] = upto
    if bounds:
        query["start"] = bounds
    return query


def window_holds_all(since: int | None, upto: int | None, oldest: int | None, newest: int | None) -> bool:
    """Whether a `since`/`upto` window contains every record whose starts run from `oldest` to `newest` (None:
    there are none), so that its count is the maintained one."""
    if oldest is None or newest is None:
        return True
    return (since is None or since <= oldest) and (upto is None or newest <= upto)


def list_index(name: str | None) -> list[tuple[str, int]]:
    """The index that serves a list or count (as its key, a hint MongoDB accepts whatever the index's name)."""
    return BY_PATH if name else BY_NAMESPACE


def superseded_indexes(info: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names, in `index_information()`, of indexes that earlier versions created and this one does not use."""
    return [
        name
        for name, spec in info.items()
        if tuple(field for field, _ in spec.get("key", [])) in _SUPERSEDED or "expireAfterSeconds" in spec
    ]


def redact(uri: str) -> str:
    """The URI without credentials, fit for an error message."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _short(exc: BaseException) -> str:
    # PyMongo appends a whole topology description; the first clause says what happened.
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for marker in (" (configured timeouts", ", Timeout:", ", Topology Description"):
        text = text.split(marker, 1)[0]
    return text[:200]


class ActivationStore:
    """`async with ActivationStore(uri, database) as store`: one client, closed on exit."""

    def __init__(self, uri: str, database: str, *, timeout_s: float = 3.0) -> None:
        self.uri = uri
        self.database = database
        self._timeout_ms = int(timeout_s * 1000)
        self._client: AsyncMongoClient[Document] | None = None
        self._collection: AsyncCollection[Document] | None = None
        self._counts: ActivationCounts | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ActivationStore:
        return cls(settings.mongodb_uri, settings.mongodb_database)

    async def __aenter__(self) -> Self:
        try:
            client: AsyncMongoClient[Document] = AsyncMongoClient(
                self.uri,
                serverSelectionTimeoutMS=self._timeout_ms,
                connectTimeoutMS=self._timeout_ms,
                tz_aware=True,
            )
        except PyMongoError as exc:  # e.g. a malformed URI
            raise Unavailable(f"cannot reach MongoDB at {redact(self.uri)}: {_short(exc)}") from None
        try:
            with self._translated():
                await client.admin.command("ping")
        except BaseException:
            await client.close()
            raise
        self._client = client
        self._collection = client[self.database][ACTIVATIONS_COLLECTION]
        self._counts = ActivationCounts(client[self.database], self._collection)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, self._client, self._collection, self._counts = self._client, None, None, None
        if client is not None:
            await client.close()

    @property
    def collection(self) -> AsyncCollection[Document]:
        if self._collection is None:
            raise RuntimeError("ActivationStore used outside its `async with` block")
        return self._collection

    @property
    def counts(self) -> ActivationCounts:
        if self._counts is None:
            raise RuntimeError("ActivationStore used outside its `async with` block")
        return self._counts

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Translate PyMongo's errors at this boundary: unreachable → Unavailable, anything else → 500."""
        try:
            yield
        except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
            raise Unavailable(f"cannot reach MongoDB at {redact(self.uri)}: {_short(exc)}") from None
        except PyMongoError as exc:
            raise InternalError(f"MongoDB error: {_short(exc)}") from None

    async def provision(self) -> None:
        """Create the indexes (idempotent: creating an existing identical index is a no-op)."""
        c = self.collection
        with self._translated():
            await c.create_index([("activationId", ASCENDING)], unique=True, name="activationId")
            await c.create_index(BY_NAMESPACE, name="ns_start_id")
            await c.create_index(BY_PATH, name="ns_path_start_id")
            await c.create_index(BY_POSITION, name="ns_position")
            for name in superseded_indexes(await c.index_information()):
                await c.drop_index(name)
            await self.counts.provision(BY_NAMESPACE, BY_PATH)

    async def insert(self, record: Activation, position: int | None = None) -> bool:
        """Store one record; False if its activationId was already stored (the first version is kept)."""
        return await self.insert_many([record], None if position is None else [position]) == 1

    async def insert_many(
        self, records: Iterable[Activation], positions: Iterable[int | None] | None = None
    ) -> int:
        """Store records in one unordered batch, and count them; already stored activationIds are skipped
        silently and not counted again. `positions` are their ACTIVATIONS sequences, in the same order.
        Returns how many were new."""
        batch = new_activation_id()
        records = builtins.list(records)
        where = builtins.list(positions) if positions is not None else [None] * len(records)
        docs = [to_document(r, batch, p) for r, p in zip(records, where, strict=True)]
        if not docs:
            return 0
        named = ((d["_id"], d["namespace"], d[ENTITY_PATH], batch) for d in docs)
        deltas = pending_deltas(batch, 1, named, now_ms())
        with self._translated():
            await self.counts.begin(deltas)
            try:
                await self.collection.insert_many(docs, ordered=False)
                failed: set[int] = set()
            except BulkWriteError as exc:
                failed = _failed_despite_duplicates(exc)
        stored = {d["_id"] for i, d in enumerate(docs) if i not in failed}
        try:
            with self._translated():
                await self.counts.settle(deltas, stored.__contains__)
        except SquallError as exc:
            # The records are stored: the batch succeeded. The upkeep settles its counts from the records.
            log.warning("activation counts of a stored batch left pending: %s", exc.message)
        return len(stored)

    async def get(self, namespace: str, activation_id: str) -> Activation:
        validate_activation_id(activation_id)
        query = {"activationId": eq(activation_id), "namespace": eq(namespace)}
        with self._translated():
            doc = await self.collection.find_one(query, _PROJECTION)
        if doc is None:
            raise NotFound()
        return from_document(doc)

    async def list(
        self,
        namespace: str,
        *,
        name: str | None = None,
        since: int | None = None,
        upto: int | None = None,
        skip: int = 0,
        limit: int = 30,
    ) -> list[Activation]:
        """Records of a namespace, newest `start` first; `limit` 0 means no limit (the API caps it)."""
        if skip < 0 or limit < 0:
            raise BadRequest("skip and limit must not be negative")
        query = list_filter(namespace, name=name, since=since, upto=upto)
        with self._translated():
            cursor = self.collection.find(
                query, _PROJECTION, sort=_NEWEST_FIRST, skip=skip, limit=limit, hint=list_index(name)
            )
            docs = await cursor.to_list()
        return [from_document(d) for d in docs]

    # -- positions: resuming a live stream ------------------------------------------------------------------

    async def after_position(
        self, namespace: str, after: int, before: int, limit: int
    ) -> builtins.list[tuple[int, Activation]]:
        """Up to `limit` of a namespace's records whose position lies between `after` and `before` (both
        excluded), in position order, with their positions."""
        query = {"namespace": eq(namespace), POSITION: {"$gt": after, "$lt": before}}
        projection = {"_id": 0, RECORD: 1, "activationId": 1, POSITION: 1}
        with self._translated():
            cursor = self.collection.find(
                query, projection, sort=[(POSITION, ASCENDING)], limit=limit, hint=BY_POSITION
            )
            docs = await cursor.to_list()
        return [(int(d[POSITION]), from_document(d)) for d in docs]

    async def position_of(self, namespace: str, activation_id: str) -> int | None:
        """The position of a stored record (NotFound if there is none; None if it was stored without one)."""
        validate_activation_id(activation_id)
        query = {"activationId": eq(activation_id), "namespace": eq(namespace)}
        with self._translated():
            doc = await self.collection.find_one(query, {"_id": 0, POSITION: 1})
        if doc is None:
            raise NotFound()
        found = doc.get(POSITION)
        return None if found is None else int(found)

    async def first_position_since(self, namespace: str, since: int) -> int | None:
        """The smallest position among a namespace's records that started at or after `since` (None: none).

        A record is published once it ends, so positions do not follow `start`: the range on `start` is read
        from the list index and the smallest position taken from it; a stream resumed with `since` sends
        every record of that range anyway.
        """
        query = {"namespace": eq(namespace), "start": {"$gte": since}, POSITION: {"$exists": True}}
        with self._translated():
            doc = await self.collection.find_one(
                query, {"_id": 0, POSITION: 1}, sort=[(POSITION, ASCENDING)], hint=BY_NAMESPACE
            )
        return None if doc is None else int(doc[POSITION])

    async def count(
        self, namespace: str, *, name: str | None = None, since: int | None = None, upto: int | None = None
    ) -> int:
        """How many records a list with these filters pages through."""
        with self._translated():
            if await self._window_holds_all(namespace, name, since, upto):
                return await self.counts.count(namespace, name or "")
        # A window that cuts the records is counted on the index: as many entries as the window holds.
        query = list_filter(namespace, name=name, since=since, upto=upto)
        c = self.collection
        with self._translated():
            # The `count` command rather than count_documents (an aggregation): with a predicate it is exact
            # on MongoDB, and nx-27017 answers it from the index (count_documents scans every record).
            reply = await c.database.command("count", c.name, query=query, hint=dict(list_index(name)))
        return int(reply["n"])

    async def _window_holds_all(
        self, namespace: str, name: str | None, since: int | None, upto: int | None
    ) -> bool:
        if since is None and upto is None:
            return True
        query, hint = list_filter(namespace, name=name), list_index(name)
        ends: builtins.list[int | None] = []
        for order in (ASCENDING, DESCENDING):  # the oldest and the newest record: one index probe each
            sort = [("start", order), ("activationId", order)]
            doc = await self.collection.find_one(query, {"_id": 0, "start": 1}, sort=sort, hint=hint)
            ends.append(None if doc is None else int(doc["start"]))
        return window_holds_all(since, upto, ends[0], ends[1])

    async def tend_counts(self, written_before: int, given_up_before: int) -> int:
        """The upkeep's care of the counts: settle what writers left pending (see
        ActivationCounts.settle_abandoned), then fold the settled changes into the totals. Returns how many
        were folded."""
        with self._translated():
            await self.counts.settle_abandoned(written_before, given_up_before)
            return await self.counts.fold()

    # -- retention: the upkeep's sweep ---------------------------------------------------------------------

    async def namespaces(self) -> builtins.list[str]:
        """The namespaces that have records, found by stepping through the namespace index: one probe per
        namespace (`distinct` reads every record on nx-27017)."""
        found: builtins.list[str] = []
        with self._translated():
            while True:
                query = {"namespace": {"$gt": found[-1] if found else ""}}
                doc = await self.collection.find_one(
                    query, {"_id": 0, "namespace": 1}, sort=[("namespace", ASCENDING)], hint=BY_NAMESPACE
                )
                if doc is None or not isinstance(doc.get("namespace"), str):
                    return found
                found.append(doc["namespace"])

    async def oldest(self, namespace: str, before: int, limit: int) -> builtins.list[Document]:
        """Up to `limit` of a namespace's records that started before `before` (epoch ms), oldest first, as
        `{_id, entityPath, batch}`."""
        query = {"namespace": eq(namespace), "start": {"$lt": before}}
        sort = [("start", ASCENDING), ("activationId", ASCENDING)]
        with self._translated():
            cursor = self.collection.find(
                query, {"_id": 1, ENTITY_PATH: 1, BATCH: 1}, sort=sort, limit=limit, hint=BY_NAMESPACE
            )
            return await cursor.to_list()

    async def delete(self, namespace: str, docs: builtins.list[Document]) -> int:
        """Delete records of a namespace, as `oldest` returned them, and count them out; records whose write
        batch is not yet counted are left for a later sweep. Returns how many were deleted.

        Deleting happens by `_id`, the one field nx-27017 matches many values of through an index (`$in` on
        any other reads every record). The upkeep lease makes this the only deleter, which is what lets
        counts left pending by a crash be settled from which records are gone.
        """
        with self._translated():
            pending = await self.counts.pending_batches(namespace, (d.get(BATCH) for d in docs))
        docs = [d for d in docs if d.get(BATCH) not in pending]
        if not docs:
            return 0
        sweep = new_activation_id()
        named = ((d["_id"], namespace, d.get(ENTITY_PATH, ""), d.get(BATCH)) for d in docs)
        deltas = pending_deltas(sweep, -1, named, now_ms())
        ids = builtins.list({d["_id"]: None for d in docs})
        with self._translated():
            await self.counts.begin(deltas)
            result = await self.collection.delete_many({"_id": {"$in": ids}})
            if result.deleted_count == len(ids):
                await self.counts.settle(deltas, lambda _: True)  # every named record went
            else:
                await self.counts.settle_from_records(deltas)
        return result.deleted_count

    async def take_lease(self, name: str, owner: str, duration_ms: int) -> bool:
        """Hold the lease `name` for `duration_ms` from now: True if `owner` already held it, or took it
        because it was free or had expired. Each update is atomic on its one document, so of several
        contenders for an expired lease exactly one wins."""
        meta = self.collection.database[ACTIVATION_META_COLLECTION]
        now = now_ms()
        lease = {"owner": owner, "until": now + duration_ms}
        with self._translated():
            try:
                await meta.insert_one({"_id": name, **lease})
                return True
            except DuplicateKeyError:
                pass
            for held_by in ({"owner": {"$eq": owner}}, {"until": {"$lt": now}}):
                result = await meta.update_one({"_id": name, **held_by}, {"$set": lease})
                if result.matched_count:
                    return True
        return False

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up, if `owner` holds it, so that another process need not wait for it to expire."""
        meta = self.collection.database[ACTIVATION_META_COLLECTION]
        with self._translated():
            await meta.update_one({"_id": name, "owner": {"$eq": owner}}, {"$set": {"until": 0}})


def _failed_despite_duplicates(exc: BulkWriteError) -> set[int]:
    """The positions in an unordered batch that were not stored, if they failed only as duplicates."""
    details = exc.details
    others = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
    concern = details.get("writeConcernErrors") or []
    if others or concern:
        first = (others or concern)[0].get("errmsg", "unknown error")
        raise InternalError(f"MongoDB rejected activation records: {first}") from None
    return {int(e["index"]) for e in details.get("writeErrors", [])}
