"""Values read through from a KV bucket and kept in memory until the bucket's own writes say they changed."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from nats.aio.msg import Msg

from broker.bus import JetStreamBus

V = TypeVar("V")

MAX_ENTRIES = 10_000


class KvCache(Generic[V]):
    """`await cache.get(key, load)`: the value kept for KV `key`, or `load()`'s answer (kept unless None).

    Every KV write is also a core NATS message on `$KV.<bucket>.<key>`, routed to this subscription before
    JetStream acknowledges the write; a connection delivers in order, so a request caused by a finished
    write (a PUT, then an invoke; a key rotation, then a request) always finds the entry already dropped.
    A load that raced with a write is not kept (the generation check), and a reconnection, which may have
    lost invalidations, empties the cache. None is never kept, so misses (e.g. guessed keys) cannot fill it.
    """

    def __init__(self, bus: JetStreamBus, bucket: str, max_entries: int = MAX_ENTRIES) -> None:
        self.bus = bus
        self._prefix = f"$KV.{bucket}."
        self._max = max_entries
        self._values: dict[str, V] = {}
        self._generation = 0
        self._reconnects = -1
        self._sub: Any = None

    async def __aenter__(self) -> KvCache[V]:
        self._sub = await self.bus.subscribe(f"{self._prefix}>", self._on_write)
        self._reconnects = self.bus.reconnects
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._values.clear()

    async def _on_write(self, msg: Msg) -> None:
        self._generation += 1
        self._values.pop(msg.subject.removeprefix(self._prefix), None)

    async def get(self, key: str, load: Callable[[], Awaitable[V | None]]) -> V | None:
        reconnects = self.bus.reconnects
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._values.clear()
            self._generation += 1
        elif self._sub is not None and (found := self._values.get(key)) is not None:
            return found
        generation = self._generation
        value = await load()
        if value is not None and generation == self._generation and self._sub is not None:
            if len(self._values) >= self._max:
                self._values.clear()  # crude, and rare: a cache this full serves few requests per entry
            self._values[key] = value
        return value
