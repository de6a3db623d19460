"""Entities, namespaces and API keys in JetStream KV, with revisions for optimistic concurrency."""

from __future__ import annotations

import builtins
import hashlib
import logging
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import msgspec
import nats.js.errors

from broker import codec, subjects
from broker.bus import JetStreamBus, translate
from broker.clock import now_ms
from broker.entities import ACTIONS, Action, Collection, Entity, split_namespace, storage_path
from broker.entity_summary import kind_of, read_summary, summary_headers
from broker.errors import (
    BadRequest,
    ConcurrentModification,
    Conflict,
    InternalError,
    NotFound,
    QuotaExceeded,
    WrongCollection,
)
from broker.namespaces import AuthKey, Namespace

log = logging.getLogger("squall.store")

E = TypeVar("E", bound=Entity)
S = TypeVar("S", bound=msgspec.Struct)

# Entity bodies above this size go to the object store (a KV value must fit one NATS message, 1 MB by default).
INLINE_MAX_BYTES = 256 * 1024


class _Item(NamedTuple):
    """One current KV value: key, bytes, revision."""

    key: str
    value: bytes
    revision: int


class _Head(NamedTuple):
    """One current KV entry without its value: key, headers, revision."""

    key: str
    headers: dict[str, str] | None
    revision: int


def quota_message(limit: int) -> str:
    return (
        f"The namespace has reached its limit of {limit} entities (actions, triggers, rules and packages "
        "together): delete some, or ask an operator to raise its maxEntities limit."
    )


@dataclass(frozen=True, slots=True)
class Stored(Generic[E]):
    """An entity as read or written, with the KV revision to pass to the next `update`."""

    entity: E
    revision: int


class _Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an entities-bucket value holds: the collection tag keeps one name per namespace, and the entity
    itself, or (for one too large for a KV value, e.g. 48 MB of action code) the name of the object-store
    blob that holds it."""

    kind: str
    body: msgspec.Raw = msgspec.Raw(b"")  # empty (and omitted) when the body is a blob
    blob: str | None = None


def blob_name(key: str, body: bytes) -> str:
    """The blob of one version of an entity: named by its content, so a write that loses a revision race
    can never overwrite the body the winning revision points at."""
    return f"{key}.{hashlib.sha256(body).hexdigest()[:32]}"


def newest_first(items: list[tuple[E, int]]) -> list[E]:
    """OpenWhisk lists the most recently updated first; the KV revision breaks same-millisecond ties."""
    return [entity for entity, _ in sorted(items, key=lambda it: (it[0].updated, it[1]), reverse=True)]


def in_listing(path: str, package: str | None, prefix: str | None) -> bool:
    """Whether `path` (`name` or `pkg/name`) is listed for `package` (None: the top level)."""
    owner, sep, name = path.rpartition("/")
    if (owner if sep else None) != package:
        return False
    return prefix is None or name.startswith(prefix)


class EntityStore:
    """The KV-backed store every role reads entities, namespaces and keys through."""

    def __init__(self, bus: JetStreamBus) -> None:
        self._bus = bus

    @property
    def bus(self) -> JetStreamBus:
        """The bus the store reads and writes through (the API's live streams read ACTIVATIONS on it)."""
        return self._bus

    # -- entities ----------------------------------------------------------------------------------

    async def get(self, collection: Collection[E], namespace: str, name: str) -> Stored[E]:
        """Entity `name` (or `pkg/name`) of `collection` in `namespace`; NotFound if absent, and OpenWhisk's
        409 when the name belongs to another collection."""
        key = subjects.entity_key(namespace, name)
        kv = await self._bus.kv(subjects.ENTITIES_BUCKET)
        try:
            entry = await kv.get(key)
        except Exception as exc:
            raise translate(exc, f"reading {collection.name} {namespace}/{name}") from None
        stored = await self._unwrap(collection, _Item(key, entry.value or b"", entry.revision or 0))
        if stored is None:
            raise WrongCollection()
        return stored

    async def create(self, collection: Collection[E], entity: E) -> Stored[E]:
        """Store a new entity; Conflict if its name is taken in any collection of the namespace, QuotaExceeded
        (403) when the namespace holds its limit of entities already.

        The quota is checked before the write, so concurrent creates may pass it by a few: it bounds storage,
        it is not an exact count.
        """
        entity = msgspec.structs.replace(entity, updated=now_ms())
        key = self._key(entity)
        root, _ = split_namespace(entity.namespace)
        await self._check_quota(root)
        value, blob, headers = await self._wrap(collection, entity, key)
        try:
            revision = await self._kv_create(key, value, headers)
        except Exception as exc:
            await self._drop_blob(blob)
            if isinstance(exc, ConcurrentModification):
                raise Conflict() from None
            raise translate(exc, f"creating {collection.name} {entity.namespace}/{entity.name}") from None
        return Stored(entity, revision)

    async def entity_quota(self, namespace: str) -> int:
        """How many entities `namespace` may hold: its record's `maxEntities`, else the system setting."""
        default = self._bus.settings.entities_per_namespace
        found = await self._get_record(subjects.NAMESPACES_BUCKET, subjects.token(namespace), Namespace)
        if found is None or found.limits.maxEntities is None:
            return default
        return found.limits.maxEntities

    async def count(self, namespace: str) -> int:
        """The entities of every collection in `namespace` (packaged actions included); reads headers only."""
        return len(await self._scan_heads(subjects.ENTITIES_BUCKET, subjects.namespace_prefix(namespace)))

    async def _check_quota(self, namespace: str) -> None:
        limit = await self.entity_quota(namespace)
        # The stream's own count of the namespace's keys is one cheap request, and an upper bound (a deleted
        # entity leaves a marker): only a namespace near its quota pays for the exact count, a read of every
        # entity's header, which on each create would make filling a namespace quadratic.
        keys = f"$KV.{subjects.ENTITIES_BUCKET}.{subjects.namespace_prefix(namespace)}"
        _, per_key = await self._bus.count(f"KV_{subjects.ENTITIES_BUCKET}", keys)
        if len(per_key) < limit:
            return
        if await self.count(namespace) >= limit:
            raise QuotaExceeded(quota_message(limit))

    async def _kv_create(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        """KeyValue.create with headers (nats-py's takes none): a write expecting no live revision."""
        try:
            return await self._kv_update(key, value, 0, headers)
        except ConcurrentModification:
            kv = await self._bus.kv(subjects.ENTITIES_BUCKET)
            try:
                await kv.get(key)
            except nats.js.errors.KeyNotFoundError as exc:
                # A deleted or purged key: its tombstone is the revision to replace.
                entry = getattr(exc, "entry", None)
                if entry is None or not entry.revision:
                    raise
                return await self._kv_update(key, value, entry.revision, headers)
            raise

    async def _kv_update(self, key: str, value: bytes, last: int, headers: dict[str, str]) -> int:
        """KeyValue.update with headers: the write lands only if `last` is still the key's revision."""
        headers = headers | {"Nats-Expected-Last-Subject-Sequence": str(last)}
        ack = await self._bus.publish(f"$KV.{subjects.ENTITIES_BUCKET}.{key}", value, headers=headers)
        return ack.seq

    async def update(self, collection: Collection[E], entity: E, revision: int) -> Stored[E]:
        """Replace an entity read at `revision`; ConcurrentModification if it changed since."""
        entity = msgspec.structs.replace(entity, updated=now_ms())
        key = self._key(entity)
        previous = await self._blob_of(key, revision)
        value, blob, headers = await self._wrap(collection, entity, key)
        try:
            new_revision = await self._kv_update(key, value, revision, headers)
        except Exception as exc:
            if blob != previous:
                await self._drop_blob(blob)
            raise translate(exc, f"updating {collection.name} {entity.namespace}/{entity.name}") from None
        if previous != blob:
            await self._drop_blob(previous)
        return Stored(entity, new_revision)

    async def delete(
        self, collection: Collection[E], namespace: str, name: str, revision: int | None = None
    ) -> E:
        """Remove an entity and return it; the name is free again at once."""
        current = await self.get(collection, namespace, name)
        if revision is not None and revision != current.revision:
            raise ConcurrentModification()
        # Expecting the revision just read makes a concurrent update fail the delete instead of
        # silently losing that update behind an entity we never returned.
        key = subjects.entity_key(namespace, name)
        blob = await self._blob_of(key, current.revision)
        await self._purge(subjects.ENTITIES_BUCKET, key, current.revision)
        await self._drop_blob(blob)
        return current.entity

    async def list(
        self, collection: Collection[E], namespace: str, *, prefix: str | None = None
    ) -> builtins.list[E]:
        """Top-level entities of `collection` in `namespace` (packaged actions excluded), newest first, as
        summaries: without action code, parameters or a trigger's rules (broker/entity_summary.py), read from
        the KV messages' headers, never from their bodies.

        `prefix` keeps only names starting with it.
        """
        return await self._list(collection, namespace, None, prefix)

    async def list_in_package(self, namespace: str, package: str) -> builtins.list[Action]:
        """The actions inside `package` of `namespace`, newest first, as summaries (see `list`)."""
        return await self._list(ACTIONS, namespace, package, None)

    async def _list(
        self, collection: Collection[E], namespace: str, package: str | None, prefix: str | None
    ) -> builtins.list[E]:
        found: builtins.list[tuple[E, int]] = []
        for head in await self._scan_heads(subjects.ENTITIES_BUCKET, subjects.namespace_prefix(namespace)):
            _, _, tok = head.key.partition(".")
            if not in_listing(subjects.untoken(tok), package, prefix):
                continue
            kind = kind_of(head.headers)
            if kind is not None and kind != collection.name:
                continue
            summary = read_summary(head.headers, collection.type) if kind is not None else None
            if summary is not None:
                found.append((summary, head.revision))
                continue
            # Written before summaries, or with annotations too large for a header: read it whole.
            stored = await self._read_whole(collection, head)
            if stored is not None:
                found.append((stored.entity, stored.revision))
        return newest_first(found)

    async def _read_whole(self, collection: Collection[E], head: _Head) -> Stored[E] | None:
        kv = await self._bus.kv(subjects.ENTITIES_BUCKET)
        try:
            entry = await kv.get(head.key)
        except nats.js.errors.KeyNotFoundError:
            return None  # deleted since the scan
        except Exception as exc:
            raise translate(exc, f"reading {head.key}") from None
        return await self._unwrap(collection, _Item(head.key, entry.value or b"", entry.revision or 0))

    @staticmethod
    def _key(entity: Entity) -> str:
        return subjects.entity_key(*storage_path(entity))

    async def _wrap(
        self, collection: Collection[E], entity: E, key: str
    ) -> tuple[bytes, str | None, dict[str, str]]:
        """The KV value of `entity`, the blob it put its body in (None when the body fits inline), and the
        message headers that carry its kind and summary for listings."""
        headers = summary_headers(collection.name, entity)
        body = codec.encode(entity)
        if len(body) <= INLINE_MAX_BYTES:
            return codec.encode(_Envelope(kind=collection.name, body=msgspec.Raw(body))), None, headers
        name = blob_name(key, body)
        store = await self._bus.object_store(subjects.BLOBS_BUCKET)
        try:
            await store.put(name, body)
        except Exception as exc:
            raise translate(exc, f"storing the body of {collection.name} {key}") from None
        return codec.encode(_Envelope(kind=collection.name, blob=name)), name, headers

    async def _unwrap(self, collection: Collection[E], item: _Item) -> Stored[E] | None:
        """The item's entity if it belongs to `collection`, else None."""
        try:
            envelope = codec.decode(item.value, _Envelope)
            if envelope.kind != collection.name:
                return None
            body = bytes(envelope.body) if len(envelope.body) else await self._read_blob(envelope, item)
            entity = codec.decode(body, collection.type)
        except BadRequest as exc:
            raise InternalError(f"unreadable entity at {item.key}: {exc.message}") from None
        return Stored(entity, item.revision)

    async def _read_blob(self, envelope: _Envelope, item: _Item) -> bytes:
        if envelope.blob is None:
            raise InternalError(f"the entity at {item.key} has neither a body nor a blob")
        store = await self._bus.object_store(subjects.BLOBS_BUCKET)
        try:
            found = await store.get(envelope.blob)
        except nats.js.errors.ObjectNotFoundError:
            raise InternalError(
                f"the body of the entity at {item.key} is missing from the object store"
            ) from None
        except Exception as exc:
            raise translate(exc, f"reading the body of {item.key}") from None
        return found.data or b""

    async def _blob_of(self, key: str, revision: int) -> str | None:
        """The blob the entity at `key` points at in `revision` (None: inline, or another revision now)."""
        kv = await self._bus.kv(subjects.ENTITIES_BUCKET)
        try:
            entry = await kv.get(key, revision=revision)
            return codec.decode(entry.value or b"", _Envelope).blob
        except (nats.js.errors.KeyNotFoundError, BadRequest):
            return None
        except Exception as exc:
            raise translate(exc, f"reading {key}") from None

    async def _drop_blob(self, name: str | None) -> None:
        """Remove a blob no revision points at any more; one left behind wastes space, nothing else."""
        if name is None:
            return
        try:
            store = await self._bus.object_store(subjects.BLOBS_BUCKET)
            await store.delete(name)
        except Exception as exc:
            log.warning("could not remove the unused blob %s: %s", name, exc)

    async def delete_all(self, namespace: str) -> int:
        """Remove every entity of `namespace` (and its blobs), whatever the collection; returns how many."""
        items = await self._scan(subjects.ENTITIES_BUCKET, subjects.namespace_prefix(namespace))
        for item in items:
            try:
                blob = codec.decode(item.value, _Envelope).blob
            except BadRequest:
                blob = None
            await self._purge(subjects.ENTITIES_BUCKET, item.key, None)
            await self._drop_blob(blob)
        return len(items)

    async def purge_keys(self, bucket: str, namespace: str) -> int:
        """Remove every key of `bucket` under `<namespace>.` (feed registrations and statuses)."""
        heads = await self._scan_heads(bucket, subjects.namespace_prefix(namespace))
        for head in heads:
            await self._purge(bucket, head.key, None)
        return len(heads)

    # -- namespaces --------------------------------------------------------------------------------

    async def get_namespace(self, name: str) -> Namespace:
        found = await self._get_record(subjects.NAMESPACES_BUCKET, subjects.token(name), Namespace)
        if found is None:
            raise NotFound()
        return found

    async def put_namespace(self, namespace: Namespace) -> Namespace:
        """Create or replace a namespace record (idempotent)."""
        await self._put_record(subjects.NAMESPACES_BUCKET, subjects.token(namespace.name), namespace)
        return namespace

    async def delete_namespace(self, name: str) -> None:
        await self.get_namespace(name)
        await self._purge(subjects.NAMESPACES_BUCKET, subjects.token(name), None)

    async def list_namespaces(self) -> builtins.list[Namespace]:
        found = await self._all_records(subjects.NAMESPACES_BUCKET, Namespace)
        return sorted(found, key=lambda ns: ns.name)

    # -- API keys ----------------------------------------------------------------------------------

    async def put_key(self, key: AuthKey) -> None:
        await self._put_record(subjects.AUTHKEYS_BUCKET, subjects.token(key.uuid), key)

    async def find_key(self, uuid: str) -> AuthKey | None:
        """The key record for `uuid`, or None: an unknown key is an auth failure, not an error."""
        return await self._get_record(subjects.AUTHKEYS_BUCKET, subjects.token(uuid), AuthKey)

    async def delete_key(self, uuid: str) -> None:
        if await self.find_key(uuid) is None:
            raise NotFound()
        await self._purge(subjects.AUTHKEYS_BUCKET, subjects.token(uuid), None)

    async def keys_of(self, namespace: str) -> builtins.list[AuthKey]:
        found = await self._all_records(subjects.AUTHKEYS_BUCKET, AuthKey)
        return sorted((k for k in found if k.namespace == namespace), key=lambda k: k.created)

    # -- plain records and KV plumbing -------------------------------------------------------------

    async def _get_record(self, bucket: str, key: str, type_: type[S]) -> S | None:
        kv = await self._bus.kv(bucket)
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # also raised for deleted and purged keys
            return None
        except Exception as exc:
            raise translate(exc, f"reading {bucket} {key}") from None
        return self._decode(_Item(key, entry.value or b"", entry.revision or 0), type_)

    async def _put_record(self, bucket: str, key: str, record: msgspec.Struct) -> None:
        kv = await self._bus.kv(bucket)
        try:
            await kv.put(key, codec.encode(record))
        except Exception as exc:
            raise translate(exc, f"writing {bucket} {key}") from None

    async def _all_records(self, bucket: str, type_: type[S]) -> builtins.list[S]:
        return [self._decode(item, type_) for item in await self._scan(bucket, ">")]

    @staticmethod
    def _decode(item: _Item, type_: type[S]) -> S:
        try:
            return codec.decode(item.value, type_)
        except BadRequest as exc:
            raise InternalError(f"unreadable record at {item.key}: {exc.message}") from None

    async def _purge(self, bucket: str, key: str, revision: int | None) -> None:
        """Drop every revision of `key`, leaving a tombstone that `create` may replace."""
        # nats-py's KeyValue.purge takes no expected revision, so the purge message is built here
        # (KV protocol, ADR-8): the rollup removes the history, the expectation guards the race.
        headers = {"KV-Operation": "PURGE", "Nats-Rollup": "sub"}
        if revision is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(revision)
        await self._bus.publish(f"$KV.{bucket}.{key}", b"", headers=headers)  # raises broker errors only

    async def _scan_heads(self, bucket: str, pattern: str) -> builtins.list[_Head]:
        """Like `_scan`, with the headers of each current entry and never its value."""
        await self._bus.kv(bucket)
        prefix = f"$KV.{bucket}."
        return [
            _Head(msg.subject[len(prefix) :], msg.headers, msg.metadata.sequence.stream)
            for msg in await self._bus.last_per_subject(f"KV_{bucket}", prefix + pattern, headers_only=True)
            if not is_tombstone(msg.headers)
        ]

    async def _scan(self, bucket: str, pattern: str) -> builtins.list[_Item]:
        """Current values of the keys matching `pattern` (deleted ones left out), in one consumer pass."""
        await self._bus.kv(bucket)  # a missing bucket is Unavailable, not NotFound
        prefix = f"$KV.{bucket}."
        return [
            _Item(msg.subject[len(prefix) :], msg.data, msg.metadata.sequence.stream)
            for msg in await self._bus.last_per_subject(f"KV_{bucket}", prefix + pattern)
            if not is_tombstone(msg.headers)
        ]


def is_tombstone(headers: dict[str, str] | None) -> bool:
    """A KV delete or purge marker (client-written, or server-written since nats-server 2.11)."""
    if not headers:
        return False
    return headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers
