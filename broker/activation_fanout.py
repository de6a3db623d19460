"""Shared live reading of ACTIVATIONS: one reader per namespace and process, each record decoded and rendered once
and handed to every live stream of the namespace whose filters it matches.

A stream attaches an Inbox to its namespace's LiveReader (the first attach starts the reader, the last detach
stops it, which removes its consumer). The inbox receives every matching record after `attach_at`, the reader's
position when it attached; a stream that starts earlier reads up to there itself (broker/activation_source.py).
The reader never waits for a stream: an inbox holds at most its window of records, and one that is full is marked
`overflowed` and given nothing more, so the stream goes back to reading on its own from its last position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from broker import codec, large_records, subjects
from broker.activation_feed import whole_record
from broker.activation_filter import ActivationFilter, matches
from broker.activation_store import ActivationStore
from broker.activation_tail import ActivationTail, Entry, TailLost, last_position
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.errors import SquallError, Unavailable

log = logging.getLogger("squall.activation_fanout")

# Credit of the shared reader's pulls: it hands records on at once, so this only bounds its own backlog.
READER_WINDOW = 256

# The most bytes of events a stream holds for its client (with at most its window of records): large records
# arrive whole, and a window of them must not be a window of megabytes. One event is always let in.
WINDOW_BYTES = 8 * 1024 * 1024

# Records handed on between two turns of the streams; well under any stream's window.
YIELD_EVERY = 8

Render = Callable[[int, bytes], bytes]  # (position, the record's JSON) → what a stream sends for it
Positioned = tuple[int, bytes]


class Inbox:
    """One live stream's share of its namespace's reader: the records rendered for it, at most `window`."""

    __slots__ = (
        "attach_at",
        "bytes",
        "failed",
        "items",
        "notify",
        "overflowed",
        "reader",
        "selected",
        "window",
    )

    def __init__(
        self, reader: LiveReader, selected: ActivationFilter, window: int, notify: Callable[[], None]
    ) -> None:
        self.reader = reader
        self.selected = selected
        self.window = window
        self.notify = notify
        self.attach_at = reader.position  # every record after this one comes here, if it matches
        self.items: deque[Positioned] = deque()
        self.bytes = 0  # of the events in `items` (shared with other inboxes, counted in each)
        self.overflowed = False
        self.failed: SquallError | None = None

    def offer(self, item: Positioned) -> None:
        if self.overflowed:
            return
        held = len(self.items)
        if held and (held >= self.window or self.bytes + len(item[1]) > WINDOW_BYTES):
            self.overflowed = True  # the stream reads on its own from here; the reader never waits
            self.notify()
            return
        self.items.append(item)
        self.bytes += len(item[1])
        if not held:
            # A stream waits for its inbox only once it has emptied it: one notice per batch is enough.
            self.notify()

    def fail(self, error: SquallError) -> None:
        self.failed = error
        self.notify()


class LiveReader:
    """One namespace's ACTIVATIONS consumer in this process, fanning each record out to the attached inboxes."""

    def __init__(self, bus: JetStreamBus, store: ActivationStore, namespace: str, render: Render) -> None:
        self.bus = bus
        self.store = store
        self.namespace = namespace
        self.render = render
        self.position = 0  # the last position the reader passed: set when it starts
        # Inboxes grouped by filter: a record is matched once per distinct filter, however many tabs share it.
        self._groups: dict[ActivationFilter, list[Inbox]] = {}
        self._attaching = 0
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"activation-fanout-{namespace}")
        self.stopped = False
        self._since_yield = 0

    @property
    def idle(self) -> bool:
        return not self._groups and not self._attaching

    async def started(self) -> None:
        """Wait until the reader's consumer exists (raises what stopped it from starting)."""
        self._attaching += 1
        try:
            await asyncio.shield(self._started)
        finally:
            self._attaching -= 1

    def attach(self, selected: ActivationFilter, window: int, notify: Callable[[], None]) -> Inbox:
        inbox = Inbox(self, selected, window, notify)
        self._groups.setdefault(selected, []).append(inbox)
        return inbox

    def detach(self, inbox: Inbox) -> None:
        group = self._groups.get(inbox.selected)
        if group is not None and inbox in group:
            group.remove(inbox)
            if not group:
                del self._groups[inbox.selected]

    async def stop(self) -> None:
        """Stop reading and remove the consumer."""
        self.stopped = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        if not self._started.done():
            self._started.set_exception(Unavailable("The activation stream reader stopped."))
            self._started.exception()  # retrieved: nobody may be waiting

    async def _run(self) -> None:
        subject = subjects.activation_filter(self.namespace)
        try:
            self.position = await last_position(self.bus)
            while True:
                try:
                    async with ActivationTail(
                        self.bus, subject, after=self.position, window=READER_WINDOW
                    ) as tail:
                        if not self._started.done():
                            self._started.set_result(None)
                        while True:
                            await self._fan_out(await tail.next())
                            self._since_yield += 1
                            if self._since_yield >= YIELD_EVERY:
                                # A backlog taken at once would fill the inboxes before any stream ran: let
                                # them send what they have.
                                self._since_yield = 0
                                await asyncio.sleep(0)
                except TailLost as exc:
                    # The reader may have missed records (a lost pull, a purge): every stream reads on its own
                    # from its last position, and attaches again where the reopened reader starts.
                    log.info(
                        "activation fan-out of %s reopened after %s: %s", self.namespace, self.position, exc
                    )
                    self._overflow_all()
        except Exception as exc:
            error = (
                exc if isinstance(exc, SquallError) else Unavailable("The activation stream reader failed.")
            )
            log.warning("activation fan-out of %s failed: %r", self.namespace, exc)
            self.stopped = True  # the next stream to attach starts a new reader
            if not self._started.done():
                self._started.set_exception(error)
            for inboxes in list(self._groups.values()):
                for inbox in inboxes:
                    inbox.fail(error)

    def _overflow_all(self) -> None:
        for inboxes in self._groups.values():
            for inbox in inboxes:
                inbox.overflowed = True
                inbox.notify()

    async def _fan_out(self, entry: Entry) -> None:
        if entry.position <= self.position:
            return
        self.position = entry.position
        record: Activation | None = None
        payload = entry.payload
        name = (entry.headers or {}).get(large_records.OBJECT_HEADER)
        if name is not None:
            # An inbox attached meanwhile has attach_at == this position: its own catch-up reads this record.
            record = await whole_record(self.bus, self.store, self.namespace, entry, name)
            payload = codec.encode(record)
        if not self._groups:
            return
        item = (entry.position, self.render(entry.position, payload))  # one rendering, shared by every inbox
        for selected, inboxes in list(self._groups.items()):
            if not selected.empty:
                if record is None:
                    record = codec.decode(payload, Activation)
                if not matches(selected, record):
                    continue
            for inbox in inboxes:
                inbox.offer(item)


class LiveReaders:
    """This process's live readers, one per namespace with live streams; `aclose()` stops them all."""

    def __init__(self, bus: JetStreamBus, store: ActivationStore, render: Render) -> None:
        self.bus = bus
        self.store = store
        self.render = render
        self._readers: dict[str, LiveReader] = {}

    async def attach(
        self, namespace: str, selected: ActivationFilter, window: int, notify: Callable[[], None]
    ) -> Inbox:
        """An inbox on the namespace's reader, starting the reader if there is none."""
        reader = self._readers.get(namespace)
        if reader is None or reader.stopped:
            reader = self._readers[namespace] = LiveReader(self.bus, self.store, namespace, self.render)
        try:
            await reader.started()
        except BaseException:
            if reader.idle:
                await self._stop(reader)
            raise
        if reader.stopped:  # stopped while this one waited (its last stream left): start another
            return await self.attach(namespace, selected, window, notify)
        return reader.attach(selected, window, notify)

    async def detach(self, inbox: Inbox) -> None:
        reader = inbox.reader
        reader.detach(inbox)
        if reader.idle:
            await self._stop(reader)

    async def _stop(self, reader: LiveReader) -> None:
        if self._readers.get(reader.namespace) is reader:
            del self._readers[reader.namespace]
        await reader.stop()

    async def aclose(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        await asyncio.gather(*(reader.stop() for reader in readers))
