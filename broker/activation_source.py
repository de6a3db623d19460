"""One activation stream's records in order, with no gap and no duplicate: its own catch-up reader from where it
starts, then its namespace's shared live reader.

The hand-over is by position. The stream attaches to the live reader first, at the reader's position `attach_at`;
from then on its inbox collects every matching record after `attach_at`, within the stream's window. Meanwhile a
catch-up feed of its own (MongoDB, then JetStream) reads from the stream's start up to `attach_at`, or until it has
read everything stored (a record stored later lies after `attach_at`, so the inbox has it). Then the inbox takes
over; anything at or before the last position handed out is skipped, so an overlap never sends a record twice.
An inbox that overflowed (the client, or this process, fell a window behind) hands over the same way again: the
stream attaches anew and catches up from its last position with a reader of its own, whose pulls wait for it, so
memory stays bounded and the shared reader never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from broker.activation_fanout import WINDOW_BYTES, Inbox, LiveReaders, Positioned
from broker.activation_feed import ActivationFeed, Start
from broker.activation_filter import ActivationFilter
from broker.errors import SquallError, Unavailable

log = logging.getLogger("squall.activation_source")


class ActivationSource:
    """`await source.open()`, then `source.take()` whenever `notify` (given to `watch`) was called; `aclose()`."""

    def __init__(
        self,
        readers: LiveReaders,
        namespace: str,
        selected: ActivationFilter,
        start: Start,
        *,
        window: int,
    ) -> None:
        self.readers = readers
        self.bus = readers.bus
        self.store = readers.store
        self.namespace = namespace
        self.selected = selected
        self.start = start
        self.window = window
        self.render = readers.render  # as the live reader renders its records
        self.position: int | None = (
            start.after
        )  # the last position handed out (or known to hold nothing more)
        self._held = 0
        self.catch_ups = 0  # catch-up readers run: 1 for a resumed stream, one more per overflow
        self._notify = _nothing
        self._inbox: Inbox | None = None
        self._caught: deque[Positioned] = deque()
        self._caught_bytes = 0
        self._catch_up: asyncio.Task[None] | None = None
        self._caught_up_to: int | None = None
        self._feed: ActivationFeed | None = None
        self._room: asyncio.Future[None] | None = None
        self._failed: SquallError | None = None

    @property
    def held(self) -> int:
        """The most records held at once for the client (inbox, catch-up queue, its tail): the memory bound."""
        return max(self._held, self._feed.held if self._feed is not None else 0)

    def watch(self, notify: Callable[[], None]) -> None:
        """`notify()` is called whenever `take()` may have something new (or an error) to give."""
        self._notify = notify

    async def open(self) -> None:
        """Attach to the namespace's live reader (starting it if needed), and catch up if the stream resumes."""
        self._inbox = await self.readers.attach(self.namespace, self.selected, self.window, self._wake)
        if self.start.after is None and self.start.since is None:
            self.position = self._inbox.attach_at  # live: the next record after the reader's position
        else:
            self._catch_up_to(self.start, self._inbox.attach_at)

    def take(self) -> list[Positioned]:
        """What is ready to send now, in order (empty: wait for the next notice); raises what ended the reading."""
        if self._failed is not None:
            raise self._failed
        if self._caught:
            batch = self._drain(self._caught)
            self._caught_bytes = 0
            if self._room is not None and not self._room.done():
                self._room.set_result(None)
            return batch
        if self._catch_up is not None:
            if not self._catch_up.done():
                return []
            self._catch_up = None
            if self._caught_up_to is not None:  # everything up to there was read: skip it in the inbox
                self.position = max(self.position or 0, self._caught_up_to)
        inbox = self._inbox
        assert inbox is not None
        if inbox.failed is not None:
            raise inbox.failed
        if inbox.items:
            inbox.bytes = 0
            return self._drain(inbox.items)
        if inbox.overflowed:
            self._reattach(inbox)
        return []

    async def aclose(self) -> None:
        if self._catch_up is not None:
            self._catch_up.cancel()
            with contextlib.suppress(BaseException):
                await self._catch_up
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            await self.readers.detach(inbox)

    def _reattach(self, overflowed: Inbox) -> None:
        """The inbox missed records: attach anew (the reader has other streams or this one: it stays) and catch
        up to the new attach position from the last one handed out."""
        reader = overflowed.reader
        self._inbox = reader.attach(self.selected, self.window, self._wake)
        reader.detach(overflowed)
        self._catch_up_to(Start(after=self.position), self._inbox.attach_at)
        self._notify()

    def _catch_up_to(self, start: Start, until: int) -> None:
        self._caught_up_to = None
        if start.after is not None and start.after >= until:
            self._caught_up_to = until  # nothing to read: the inbox has everything after `until`
            return
        self.catch_ups += 1
        self._catch_up = asyncio.create_task(
            self._read(start, until), name=f"activation-catch-up-{self.namespace}"
        )

    async def _read(self, start: Start, until: int) -> None:
        feed = self._feed = ActivationFeed(
            self.bus, self.store, self.namespace, self.selected, start, window=self.window
        )
        loop = asyncio.get_running_loop()
        try:
            async with contextlib.aclosing(feed.items(until=until)) as items:
                async for item in items:
                    event = self.render(item.position, item.record)
                    while self._caught and (
                        len(self._caught) >= self.window or self._caught_bytes + len(event) > WINDOW_BYTES
                    ):
                        self._room = loop.create_future()
                        await self._room
                    self._caught.append((item.position, event))
                    self._caught_bytes += len(event)
                    self._notify()
            self._caught_up_to = until
        except Exception as exc:
            # Whatever stopped the catch-up, the stream must not go on past a gap: it ends, resumable.
            self._failed = (
                exc if isinstance(exc, SquallError) else Unavailable("Reading the activation stream failed.")
            )
            if not isinstance(exc, SquallError):
                log.warning("activation stream catch-up of %s failed: %r", self.namespace, exc)
        finally:
            self._held = max(self._held, feed.held)
            self._notify()

    def _drain(self, items: deque[Positioned]) -> list[Positioned]:
        self._held = max(self._held, len(items))
        after = self.position
        batch = list(items) if after is None else [item for item in items if item[0] > after]
        items.clear()
        if batch:
            self.position = batch[-1][0]
        return batch

    def _wake(self) -> None:
        self._notify()


def _nothing() -> None:
    pass
