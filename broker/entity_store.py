"""Entities, namespaces and API keys in JetStream KV, with revisions for optimistic concurrency."""

from __future__ import annotations

import builtins
import contextlib
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import msgspec
import nats.js.errors
from nats.js import api

from broker import codec, subjects
from broker.bus import JetStreamBus, translate
from broker.entities import ACTIONS, Action, Collection, Entity, storage_path
from broker.errors import (
    BadRequest,
    ConcurrentModification,
    Conflict,
    InternalError,
    NotFound,
    WrongCollection,
)
from broker.namespaces import AuthKey, Namespace, now_ms

E = TypeVar("E", bound=Entity)
S = TypeVar("S", bound=msgspec.Struct)

# A listing's ephemeral consumer outlives its unsubscribe by this long on the server; short, so a
# busy API listing many times a second does not pile up consumers.
_SCAN_CONSUMER_TTL_S = 5.0
_SCAN_BATCH = 256


class _Item(NamedTuple):
    """One current KV value: key, bytes, revision."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Stored(Generic[E]):
    """An entity as read or written, with the KV revision to pass to the next `update`."""

    entity: E
    revision: int


class _Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What an entities-bucket value holds: the collection tag keeps one name per namespace."""

    kind: str
    body: msgspec.Raw


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
        stored = self._unwrap(collection, _Item(key, entry.value or b"", entry.revision or 0))
        if stored is None:
            raise WrongCollection()
        return stored

    async def create(self, collection: Collection[E], entity: E) -> Stored[E]:
        """Store a new entity; Conflict if its name is taken in any collection of the namespace."""
        entity = msgspec.structs.replace(entity, updated=now_ms())
        key = self._key(entity)
        kv = await self._bus.kv(subjects.ENTITIES_BUCKET)
        try:
            revision = await kv.create(key, self._wrap(collection, entity))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise Conflict() from None
        except Exception as exc:
            raise translate(exc, f"creating {collection.name} {entity.namespace}/{entity.name}") from None
        return Stored(entity, revision)

    async def update(self, collection: Collection[E], entity: E, revision: int) -> Stored[E]:
        """Replace an entity read at `revision`; ConcurrentModification if it changed since."""
        entity = msgspec.structs.replace(entity, updated=now_ms())
        key = self._key(entity)
        kv = await self._bus.kv(subjects.ENTITIES_BUCKET)
        try:
            new_revision = await kv.update(key, self._wrap(collection, entity), last=revision)
        except Exception as exc:
            raise translate(exc, f"updating {collection.name} {entity.namespace}/{entity.name}") from None
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
        await self._purge(subjects.ENTITIES_BUCKET, subjects.entity_key(namespace, name), current.revision)
        return current.entity

    async def list(
        self, collection: Collection[E], namespace: str, *, prefix: str | None = None
    ) -> builtins.list[E]:
        """Top-level entities of `collection` in `namespace` (packaged actions excluded), newest first.

        `prefix` keeps only names starting with it.
        """
        return await self._list(collection, namespace, None, prefix)

    async def list_in_package(self, namespace: str, package: str) -> builtins.list[Action]:
        """The actions inside `package` of `namespace`, newest first."""
        return await self._list(ACTIONS, namespace, package, None)

    async def _list(
        self, collection: Collection[E], namespace: str, package: str | None, prefix: str | None
    ) -> builtins.list[E]:
        found: builtins.list[tuple[E, int]] = []
        for item in await self._scan(subjects.ENTITIES_BUCKET, subjects.namespace_prefix(namespace)):
            _, _, tok = item.key.partition(".")
            if not in_listing(subjects.untoken(tok), package, prefix):
                continue
            stored = self._unwrap(collection, item)
            if stored is not None:
                found.append((stored.entity, stored.revision))
        return newest_first(found)

    @staticmethod
    def _key(entity: Entity) -> str:
        return subjects.entity_key(*storage_path(entity))

    @staticmethod
    def _wrap(collection: Collection[E], entity: E) -> bytes:
        return codec.encode(_Envelope(kind=collection.name, body=msgspec.Raw(codec.encode(entity))))

    @staticmethod
    def _unwrap(collection: Collection[E], item: _Item) -> Stored[E] | None:
        """The item's entity if it belongs to `collection`, else None."""
        try:
            envelope = codec.decode(item.value, _Envelope)
            if envelope.kind != collection.name:
                return None
            entity = codec.decode(bytes(envelope.body), collection.type)
        except BadRequest as exc:
            raise InternalError(f"unreadable entity at {item.key}: {exc.message}") from None
        return Stored(entity, item.revision)

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

    async def _scan(self, bucket: str, pattern: str) -> builtins.list[_Item]:
        """Current values of the keys matching `pattern` (deleted ones left out), in one consumer pass."""
        # Not KeyValue.watch()/keys(): their "caught up" marker compares the consumer's pending count
        # with messages the callback has *processed*, so a fast delivery ends them early and a listing
        # silently misses entries. A pull consumer delivers nothing until asked, so its pending count
        # right after creation is an exact snapshot.
        await self._bus.kv(bucket)  # a missing bucket is Unavailable, not NotFound
        js, stream, prefix = self._bus.js, f"KV_{bucket}", f"$KV.{bucket}."
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=_SCAN_CONSUMER_TTL_S,
        )
        items: builtins.list[_Item] = []
        try:
            sub = await js.pull_subscribe(prefix + pattern, stream=stream, config=config)
            info = await sub.consumer_info()
            try:
                remaining = info.num_pending or 0
                while remaining > 0:
                    batch = await sub.fetch(min(remaining, _SCAN_BATCH), timeout=self._bus.request_timeout)
                    for msg in batch:
                        remaining = msg.metadata.num_pending
                        if not _is_tombstone(msg.headers):
                            key = msg.subject[len(prefix) :]
                            items.append(_Item(key, msg.data, msg.metadata.sequence.stream))
            finally:
                await sub.unsubscribe()
                # Best effort: the inactivity threshold removes the consumer anyway.
                with contextlib.suppress(Exception):
                    await js.delete_consumer(stream, info.name)
        except Exception as exc:
            raise translate(exc, f"listing {bucket} {pattern}") from None
        return items


def _is_tombstone(headers: dict[str, str] | None) -> bool:
    """A KV delete or purge marker (client-written, or server-written since nats-server 2.11)."""
    if not headers:
        return False
    return headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers
