"""A namespace's activation records in stream order from any position: MongoDB for what JetStream no longer
holds, then JetStream, then live, with no gap and no duplicate.

A position is a record's sequence on the ACTIVATIONS stream; the recorder stores it with each record in MongoDB
(activation_store.POSITION). Positions older than the stream's first one are read from MongoDB in position
order; from the stream's first position on, an ActivationTail reads JetStream. Every record is sent at most once
because the feed only moves forwards: anything at or before the last position it passed is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import NamedTuple

import nats.js.errors

from broker import codec, large_records, subjects
from broker.activation_filter import ActivationFilter, history_range, matches, subject_filter
from broker.activation_store import ActivationStore
from broker.activation_tail import WINDOW, ActivationTail, Entry, TailLost, first_position
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.errors import NotFound

log = logging.getLogger("squall.activation_feed")

HISTORY_PAGE = 256
# A `since` start reads JetStream from this long before `since`: the stream's timestamps are the NATS server's
# clock, a record's `start` its writer's; the filter drops what started earlier.
SINCE_SLACK_MS = 10_000


class Item(NamedTuple):
    """One record to send: its position and its JSON, exactly as `GET …/activations/{id}` answers it."""

    position: int
    record: bytes


class Start(NamedTuple):
    """Where a feed starts: after a position, at a time (epoch ms), or (neither) with the next new record."""

    after: int | None = None
    since: int | None = None


class ActivationFeed:
    """`async for item in ActivationFeed(...).items()`; `position` is the last position passed (sent or not)."""

    def __init__(
        self,
        bus: JetStreamBus,
        store: ActivationStore,
        namespace: str,
        selected: ActivationFilter,
        start: Start,
        *,
        window: int = WINDOW,
    ) -> None:
        self.bus = bus
        self.store = store
        self.namespace = namespace
        self.selected = selected
        self.start = start
        self.window = window
        self.position: int | None = start.after
        self.tail: ActivationTail | None = None  # the one open now, for its measurements
        self._held = 0

    @property
    def held(self) -> int:
        """The most JetStream messages held at once for the reader (each tail's `high_water`)."""
        return max(self._held, self.tail.high_water if self.tail is not None else 0)

    async def items(self, until: int | None = None) -> AsyncGenerator[Item]:
        """Every matching record from the start on; with `until`, the feed ends once it has passed that position
        or read everything stored so far (a shared live reader takes over after `until`, broker/activation_fanout)."""
        start_ms: int | None = None
        if self.start.since is not None:
            self.position, start_ms = await self._since(self.start.since)
        if self.position is not None:
            async for item in self._history():
                yield item
        subject = subject_filter(self.namespace, self.selected)
        while not self._reached(until):
            after = self.position
            try:
                async with ActivationTail(
                    self.bus,
                    subject,
                    after=after,
                    start_ms=start_ms if after is None else None,
                    window=self.window,
                ) as tail:
                    self._held, self.tail = self.held, tail
                    first = True
                    while not self._reached(until):
                        entry = await (tail.next() if until is None else tail.next_stored())
                        if entry is None:
                            return  # everything stored is read: nothing more up to `until`
                        if first and after is not None and entry.position > after + 1:
                            # What JetStream no longer holds between the two (it aged out while the tail was
                            # opened, or was purged) is in MongoDB, if anywhere: one indexed query.
                            async for item in self._history(before=entry.position):
                                yield item
                        first = False
                        found = await self._item(entry)
                        if found is not None:
                            yield found
            except TailLost as exc:
                log.info("activation stream of %s reopened after %s: %s", self.namespace, self.position, exc)

    def _reached(self, until: int | None) -> bool:
        return until is not None and self.position is not None and self.position >= until

    async def _since(self, since: int) -> tuple[int | None, int | None]:
        """A `since` start as a position (when MongoDB holds records JetStream no longer does) or a time."""
        stored = await self.store.first_position_since(self.namespace, since)
        if stored is not None and stored < await first_position(self.bus):
            return stored - 1, None
        return None, since - SINCE_SLACK_MS  # a record is published after it started

    async def _history(self, before: int | None = None) -> AsyncIterator[Item]:
        """Records from MongoDB after the current position, up to JetStream's first one (or `before`)."""
        while self.position is not None:
            span = history_range(self.position, before or await first_position(self.bus))
            if span is None:
                return
            page = await self.store.after_position(self.namespace, span[0], span[1], HISTORY_PAGE)
            if not page:
                self.position = span[1] - 1  # nothing of this namespace in between
                continue
            for position, record in page:
                self.position = position
                if matches(self.selected, record):
                    yield Item(position, codec.encode(record))

    async def _item(self, entry: Entry) -> Item | None:
        if self.position is not None and entry.position <= self.position:
            return None
        self.position = entry.position
        name = (entry.headers or {}).get(large_records.OBJECT_HEADER)
        if name is None and self.selected.empty:
            return Item(entry.position, entry.payload)  # already the record's JSON: no need to decode it
        if name is None:
            record = codec.decode(entry.payload, Activation)
        else:
            record = await whole_record(self.bus, self.store, self.namespace, entry, name)
        if not matches(self.selected, record):
            return None
        return Item(entry.position, entry.payload if name is None else codec.encode(record))


async def whole_record(
    bus: JetStreamBus, store: ActivationStore, namespace: str, entry: Entry, name: str
) -> Activation:
    """The whole record a stub points at: in the object store until the recorder has it in MongoDB, then there
    (it deletes the object after storing the record)."""
    try:
        objects = await bus.object_store(subjects.LARGE_RECORDS_BUCKET)
        found = await objects.get(name)
        return codec.decode(found.data or b"", Activation)
    except nats.js.errors.ObjectNotFoundError:
        pass
    stub = codec.decode(entry.payload, Activation)
    try:
        return await store.get(namespace, stub.activationId)
    except NotFound:
        # Neither: the record as far as it is known, with OpenWhisk's notice of missing logs.
        return await large_records.load(bus, entry.payload, name)
