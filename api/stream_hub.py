"""The API process's open activation streams: the per-namespace cap, their shared live readers, and ending them all
when the API drains."""

from __future__ import annotations

import asyncio
from collections import Counter

from broker.activation_fanout import LiveReaders, Render
from broker.activation_store import ActivationStore
from broker.bus import JetStreamBus
from broker.errors import Throttled


class StreamHub:
    """Counts open streams per namespace; `closing` is set once the server drains, and every stream ends."""

    def __init__(self, per_namespace: int) -> None:
        self.per_namespace = per_namespace
        self.closing = asyncio.Event()
        self._open: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()  # why streams ended: "disconnected", "slow", "shutdown", …
        self.most_held = 0  # the most records one stream held for its client at once: its memory bound
        self.stalled = 0  # clients found too slow, counted when found (their stream ends after a last notice)
        self.catch_ups = 0  # catch-up readers the streams ran (a resume, or an inbox overflow, runs one)
        self._readers: LiveReaders | None = None

    def readers(self, bus: JetStreamBus, store: ActivationStore, render: Render) -> LiveReaders:
        """The live readers of this process (one per namespace with open streams), made on first use."""
        if self._readers is None:
            self._readers = LiveReaders(bus, store, render)
        return self._readers

    def open(self, namespace: str) -> None:
        """Take a slot for a new stream of `namespace`, or refuse it (429) past the cap or while draining."""
        if self.closing.is_set():
            raise Throttled("The server is shutting down; reconnect to resume the stream.")
        if self._open[namespace] >= self.per_namespace:
            raise Throttled(
                f"Too many open activation streams for this namespace (allowed: {self.per_namespace})."
            )
        self._open[namespace] += 1

    def release(self, namespace: str, reason: str, held: int = 0, catch_ups: int = 0) -> None:
        self.most_held = max(self.most_held, held)
        self.catch_ups += catch_ups
        self._open[namespace] -= 1
        if self._open[namespace] <= 0:
            del self._open[namespace]
        self.ended[reason] += 1

    def stall(self) -> None:
        self.stalled += 1

    def open_streams(self, namespace: str | None = None) -> int:
        return sum(self._open.values()) if namespace is None else self._open[namespace]

    def close(self) -> None:
        """The server drains: every open stream ends now (its client resumes elsewhere or later)."""
        self.closing.set()

    async def aclose(self) -> None:
        """Once the server has drained: stop any live reader still running (the last stream of a namespace stops
        its reader as it ends; this is for streams the drain had to cancel)."""
        self.close()
        if self._readers is not None:
            await self._readers.aclose()
