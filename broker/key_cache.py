"""API keys from memory for the authentication hot path, invalidated by the key bucket's own writes."""

from __future__ import annotations

from types import TracebackType

from broker import subjects
from broker.bus import JetStreamBus
from broker.entity_store import EntityStore
from broker.kv_cache import KvCache
from broker.namespaces import AuthKey


class KeyCache:
    """`await keys.find_key(uuid)` answers like `EntityStore.find_key`; a rotated or deleted key stops
    working at once (see KvCache), and unknown uuids are never kept."""

    def __init__(self, bus: JetStreamBus, store: EntityStore) -> None:
        self.store = store
        self._cache: KvCache[AuthKey] = KvCache(bus, subjects.AUTHKEYS_BUCKET)

    async def __aenter__(self) -> KeyCache:
        await self._cache.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._cache.__aexit__(exc_type, exc, tb)

    async def find_key(self, uuid: str) -> AuthKey | None:
        return await self._cache.get(subjects.token(uuid), lambda: self.store.find_key(uuid))
