"""The key cache answers from memory and forgets a key the moment the store changes it."""

from __future__ import annotations

import uuid

from broker.admin import create_namespace, rotate_key
from broker.bus import JetStreamBus
from broker.entity_store import EntityStore
from broker.key_cache import KeyCache
from broker.namespaces import split_key


class CountingStore:
    def __init__(self, store: EntityStore) -> None:
        self.store = store
        self.reads = 0

    async def find_key(self, key_uuid: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await self.store.find_key(key_uuid)


async def test_cached_until_rotated(bus: JetStreamBus, store: EntityStore) -> None:
    ns = f"kc-{uuid.uuid4().hex[:8]}"
    old_uuid, _ = split_key(await create_namespace(store, ns))
    counting = CountingStore(store)
    async with KeyCache(bus, counting) as keys:  # type: ignore[arg-type]
        first = await keys.find_key(old_uuid)
        assert first is not None
        assert first.namespace == ns
        assert await keys.find_key(old_uuid) == first
        assert counting.reads == 1  # the second answer came from memory

        new_uuid, _ = split_key(await rotate_key(store, ns))
        # The rotation deleted the old key: the very next lookup must not find it.
        assert await keys.find_key(old_uuid) is None
        found = await keys.find_key(new_uuid)
        assert found is not None
        assert found.uuid == new_uuid


async def test_unknown_keys_are_not_cached(bus: JetStreamBus, store: EntityStore) -> None:
    counting = CountingStore(store)
    async with KeyCache(bus, counting) as keys:  # type: ignore[arg-type]
        unknown = str(uuid.uuid4())
        assert await keys.find_key(unknown) is None
        assert await keys.find_key(unknown) is None
        assert counting.reads == 2
