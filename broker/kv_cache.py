"""Values read through from a KV bucket and kept in memory until the bucket's own writes say they changed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from nats.aio.msg import Msg

from broker.bus import JetStreamBus

V = TypeVar("V")

MAX_ENTRIES = 10_000
# How long a value is served from memory at most. Invalidations are core NATS messages, so one can be lost where
# nothing else is: in a cluster, a write through a server whose routes are still being re-established after a
# restart reaches the stream but not every subscriber. Re-reading a hot key once a minute bounds that.
MAX_AGE_S = 60.0
# What a value counts for when its cache is given no measure: a small record (a key, a namespace).
SMALL_RECORD_BYTES = 512


def _small(_: object) -> int:
    return SMALL_RECORD_BYTES


class KvCache(Generic[V]):
    """`await cache.get(key, load)`: the value kept for KV `key`, or `load()`'s answer (kept unless None).

    Every KV write is also a core NATS message on `$KV.<bucket>.<key>`, routed to this subscription before
    JetStream acknowledges the write; a connection delivers in order, so a request caused by a finished
    write (a PUT, then an invoke; a key rotation, then a request) always finds the entry already dropped.
    A load that raced with a write is not kept (the generation check), and a reconnection, which may have
    lost invalidations, empties the cache. None is never kept, so misses (e.g. guessed keys) cannot fill it.

    Bounded by entries and by bytes (`sizeof` measures a value; SQUALL_CACHE_MAX_MB by default): past either,
    the least recently used values go. A value larger than the whole budget is served but not kept, and none is
    served from memory for longer than `max_age_s` (see MAX_AGE_S).
    """

    def __init__(
        self,
        bus: JetStreamBus,
        bucket: str,
        max_entries: int = MAX_ENTRIES,
        *,
        max_bytes: int | None = None,
        sizeof: Callable[[V], int] = _small,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self._max_age_s = max_age_s
        self._clock = clock
        self._prefix = f"$KV.{bucket}."
        self._max = max_entries
        self._max_bytes = bus.settings.cache_max_mb * 1024 * 1024 if max_bytes is None else max_bytes
        self._sizeof = sizeof
        self._bytes = 0
        # key -> (value, its size, when it was read); insertion order is recency: the first is evicted first
        self._values: dict[str, tuple[V, int, float]] = {}
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
        self._clear()

    @property
    def size_bytes(self) -> int:
        """What the kept values count for, by `sizeof`."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._values)

    def _clear(self) -> None:
        self._values.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        found = self._values.pop(key, None)
        if found is not None:
            self._bytes -= found[1]

    def _keep(self, key: str, value: V) -> None:
        size = self._sizeof(value)
        if size > self._max_bytes:
            return
        self._drop(key)
        while self._values and (len(self._values) >= self._max or self._bytes + size > self._max_bytes):
            self._drop(next(iter(self._values)))
        self._values[key] = (value, size, self._clock())
        self._bytes += size

    async def _on_write(self, msg: Msg) -> None:
        self._generation += 1
        self._drop(msg.subject.removeprefix(self._prefix))

    async def get(self, key: str, load: Callable[[], Awaitable[V | None]]) -> V | None:
        reconnects = self.bus.reconnects
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._clear()
            self._generation += 1
        elif self._sub is not None and (found := self._values.get(key)) is not None:
            if self._clock() - found[2] <= self._max_age_s:
                self._values[key] = self._values.pop(key)  # now the most recently used
                return found[0]
            self._drop(key)  # kept too long: read again
        generation = self._generation
        value = await load()
        if value is not None and generation == self._generation and self._sub is not None:
            self._keep(key, value)
        return value
