"""A read-through cache of entities, invalidated by the KV writes themselves (for the invoke hot path)."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, TypeVar

from nats.aio.msg import Msg

from broker import subjects
from broker.bus import JetStreamBus
from broker.entities import Collection, Entity
from broker.entity_store import EntityStore, Stored

E = TypeVar("E", bound=Entity)

_MAX_ENTRIES = 10_000


class EntityCache:
    """`await cache.get(ACTIONS, ns, name)` answers like `EntityStore.get`, from memory when it can.

    Every KV write is a message on `$KV.<bucket>.<key>`; a plain NATS subscription to those subjects drops a
    key the moment it changes. A write is routed to this subscription before JetStream acknowledges it, and a
    connection delivers in order, so a request caused by a finished update (a PUT, then an invoke) always
    finds the cache already cleared. A read that raced with a write is not kept (the generation check), and a
    reconnection, which may have lost invalidations, empties the cache.
    """

    def __init__(self, bus: JetStreamBus, store: EntityStore) -> None:
        self.bus = bus
        self.store = store
        self._entries: dict[str, dict[str, Stored[Any]]] = {}  # KV key -> collection name -> entity
        self._generation = 0
        self._reconnects = -1
        self._sub: Any = None
        self.hits = 0
        self.misses = 0

    async def __aenter__(self) -> EntityCache:
        nc = self.bus.nc
        self._sub = await nc.subscribe(f"$KV.{subjects.ENTITIES_BUCKET}.>", cb=self._on_write)
        self._reconnects = nc.stats.get("reconnects", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._entries.clear()

    async def _on_write(self, msg: Msg) -> None:
        self._generation += 1
        self._entries.pop(msg.subject.removeprefix(f"$KV.{subjects.ENTITIES_BUCKET}."), None)

    def _valid(self) -> bool:
        """False (and the cache emptied) when the connection was re-established since the last look."""
        reconnects = self.bus.nc.stats.get("reconnects", 0)
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._entries.clear()
            self._generation += 1
            return False
        return self._sub is not None

    async def get(self, collection: Collection[E], namespace: str, name: str) -> Stored[E]:
        key = subjects.entity_key(namespace, name)
        if self._valid():
            found = self._entries.get(key, {}).get(collection.name)
            if found is not None:
                self.hits += 1
                return found
        self.misses += 1
        generation = self._generation
        stored = await self.store.get(collection, namespace, name)
        if generation == self._generation and self._sub is not None:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()  # crude, and rare: a cache this size serves few actions each
            self._entries.setdefault(key, {})[collection.name] = stored
        return stored
