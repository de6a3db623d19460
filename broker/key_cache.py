"""API keys from memory for the authentication hot path, invalidated by the KV writes themselves."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

from nats.aio.msg import Msg

from broker import subjects
from broker.bus import JetStreamBus
from broker.entity_store import EntityStore
from broker.namespaces import AuthKey

_MAX_ENTRIES = 10_000


class KeyCache:
    """`await keys.find_key(uuid)` answers like `EntityStore.find_key`, from memory when it can.

    As in EntityCache: every write to the keys bucket is also a core NATS message on `$KV.<bucket>.<uuid>`,
    delivered to this subscription before the write is acknowledged, so a rotated or deleted key stops
    working at once. A read that raced a write is not kept, and a reconnection empties the cache. Unknown
    uuids are never cached, so guessing cannot fill memory.
    """

    def __init__(self, bus: JetStreamBus, store: EntityStore) -> None:
        self.bus = bus
        self.store = store
        self._keys: dict[str, AuthKey] = {}
        self._generation = 0
        self._reconnects = -1
        self._sub: Any = None

    async def __aenter__(self) -> KeyCache:
        nc = self.bus.nc
        self._sub = await nc.subscribe(f"$KV.{subjects.AUTHKEYS_BUCKET}.>", cb=self._on_write)
        self._reconnects = nc.stats.get("reconnects", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._keys.clear()

    async def _on_write(self, msg: Msg) -> None:
        self._generation += 1
        self._keys.pop(subjects.untoken(msg.subject.removeprefix(f"$KV.{subjects.AUTHKEYS_BUCKET}.")), None)

    async def find_key(self, uuid: str) -> AuthKey | None:
        reconnects = self.bus.nc.stats.get("reconnects", 0)
        if reconnects != self._reconnects:  # invalidations may have been lost while disconnected
            self._reconnects = reconnects
            self._keys.clear()
            self._generation += 1
        elif (found := self._keys.get(uuid)) is not None and self._sub is not None:
            return found
        generation = self._generation
        record = await self.store.find_key(uuid)
        if record is not None and generation == self._generation and self._sub is not None:
            if len(self._keys) >= _MAX_ENTRIES:
                self._keys.clear()
            self._keys[uuid] = record
        return record
