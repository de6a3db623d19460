"""A read-through cache of entities for the invoke hot path, invalidated by the KV writes themselves."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar, cast

from broker import codec, subjects
from broker.bus import JetStreamBus
from broker.entities import Collection, Entity
from broker.entity_store import EntityStore, Stored
from broker.kv_cache import KvCache

E = TypeVar("E", bound=Entity)


def cached_bytes(cached: tuple[str, Stored[Any]]) -> int:
    """What a cached entity counts for: its encoded size (action code up to 48 MB makes most of it), measured
    on a miss only."""
    return len(codec.encode(cached[1].entity)) + 256


class EntityCache:
    """`await cache.get(ACTIONS, ns, name)` answers like `EntityStore.get`, from memory when it can: an
    updated action runs in its new version at once (see KvCache)."""

    def __init__(self, bus: JetStreamBus, store: EntityStore) -> None:
        self.store = store
        # Per KV key: the collection it was read as, and what was read.
        self._cache: KvCache[tuple[str, Stored[Any]]] = KvCache(
            bus, subjects.ENTITIES_BUCKET, sizeof=cached_bytes
        )

    async def __aenter__(self) -> EntityCache:
        await self._cache.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._cache.__aexit__(exc_type, exc, tb)

    async def get(self, collection: Collection[E], namespace: str, name: str) -> Stored[E]:
        async def load() -> tuple[str, Stored[Any]]:
            return collection.name, await self.store.get(collection, namespace, name)

        cached = await self._cache.get(subjects.entity_key(namespace, name), load)
        assert cached is not None  # load answers or raises
        kind, stored = cached
        if kind != collection.name:  # kept as another collection: the store says what that means
            return await self.store.get(collection, namespace, name)
        return cast(Stored[E], stored)
