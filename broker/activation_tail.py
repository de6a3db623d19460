"""Reading ACTIVATIONS live: an ephemeral pull consumer whose pulls never ask for more than the reader has room for.

A live stream must neither lose a record nor hold an unbounded backlog for a slow client, so this is not a push
subscription (whose pending messages pile up in the client) but a pull consumer with credit: at most `window`
messages are requested and not yet taken by the reader. The consumer keeps no acknowledgements (the reader's
position is the stream sequence it last sent), lives in memory, and the server removes it shortly after its
pulls stop (topology.STREAM_READER_INACTIVE_S), so a crashed API leaves none behind; a closed tail removes it at
once. A gap in the consumer's own sequence (a pull lost over a reconnection) ends the tail with `TailLost`, and
the reader opens a new one after the last position it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from types import TracebackType
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from broker import codec, subjects
from broker.bus import JetStreamBus
from broker.errors import Unavailable
from broker.nats_errors import translate
from broker.topology import STREAM_READER_INACTIVE_S

log = logging.getLogger("squall.activation_tail")

WINDOW = 64
PULL_EXPIRES_S = 5.0
# A pull with no answer (messages or its expiry) this long after it expired was lost: pull again.
_LOST_AFTER_S = PULL_EXPIRES_S + 2.0


class TailLost(Exception):
    """The consumer went away or skipped messages: reopen after the last position taken."""


class Entry(NamedTuple):
    """One message: its stream sequence (the position), its payload and headers."""

    position: int
    payload: bytes
    headers: dict[str, str] | None


class ActivationTail:
    """`async with ActivationTail(bus, subject, after=N) as tail: entry = await tail.next()`.

    Starts after stream sequence `after`, or at the first message stored at or after `start_ms` (epoch ms), or,
    with neither, at the next new message.
    """

    def __init__(
        self,
        bus: JetStreamBus,
        filter_subject: str,
        *,
        after: int | None = None,
        start_ms: int | None = None,
        window: int = WINDOW,
    ) -> None:
        self.bus = bus
        self.filter_subject = filter_subject
        self.after = after
        self.start_ms = start_ms
        self.window = window
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        # Asked for by the open pull and not delivered yet: held + owed never exceeds `window`.
        self._owed = 0
        self._pulled_at = 0.0
        self._consumer_seq = 0
        self._inbox = ""
        self._sub: Subscription | None = None
        self._name: str | None = None
        # Messages the consumer still had to deliver, as of its creation or the last message taken: 0 with
        # nothing queued means the tail has read everything stored so far (`caught_up`).
        self._pending = 1
        self.high_water = 0  # most messages held at once: the tail's memory bound, measured

    async def __aenter__(self) -> ActivationTail:
        self._inbox = self.bus.new_inbox()
        self._sub = await self.bus.subscribe(self._inbox, self._on_message)
        try:
            info = await self.bus.js.add_consumer(subjects.ACTIVATIONS_STREAM, self._config())
        except Exception as exc:
            await self._sub.unsubscribe()
            raise translate(exc, "opening an activation stream") from None
        self._name = info.name
        self._pending = int(info.num_pending or 0)
        await self._pull()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        name, self._name = self._name, None
        with contextlib.suppress(Exception):
            if sub is not None:
                await sub.unsubscribe()
        if name is not None:
            # Best effort: the inactivity threshold removes it anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.js.delete_consumer(subjects.ACTIVATIONS_STREAM, name), 2.0)

    @property
    def consumer_name(self) -> str | None:
        return self._name

    def _config(self) -> api.ConsumerConfig:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self.filter_subject,
            mem_storage=True,
            inactive_threshold=STREAM_READER_INACTIVE_S,
            max_waiting=4,  # one pull is open at a time
        )
        if self.after is not None:
            config.deliver_policy, config.opt_start_seq = api.DeliverPolicy.BY_START_SEQUENCE, self.after + 1
        elif self.start_ms is not None:
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.fromtimestamp(self.start_ms / 1000, UTC)
        return config

    async def _pull(self) -> None:
        room = self.window - self._queue.qsize()
        if self._owed or room < max(1, self.window // 2) or self._sub is None or self._name is None:
            return
        request = codec.encode({"batch": room, "expires": int(PULL_EXPIRES_S * 1e9)})
        self._owed = room
        self._pulled_at = asyncio.get_running_loop().time()
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.ACTIVATIONS_STREAM}.{self._name}"
        await self.bus.send(next_subject, request, reply=self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        # Status messages (no reply subject) end a pull: 408 when it expired, 409 when the consumer is gone or
        # the request was refused; the reader learns of a 409 through an empty message with the status.
        self._owed = 0 if not msg.reply else max(0, self._owed - 1)
        self._queue.put_nowait(msg)
        self.high_water = max(self.high_water, self._queue.qsize())

    async def next(self) -> Entry:
        """The next message, whenever it comes."""
        entry = await self._next(stop_when_caught_up=False)
        assert entry is not None
        return entry

    async def next_stored(self) -> Entry | None:
        """The next message stored when the last one was sent (or the consumer made), or None once the tail has
        taken all of those: a catch-up reader ends there, where a live reader took over."""
        return await self._next(stop_when_caught_up=True)

    async def _next(self, *, stop_when_caught_up: bool) -> Entry | None:
        loop = asyncio.get_running_loop()
        while True:
            if stop_when_caught_up and self._pending == 0 and self._queue.empty():
                return None
            try:
                # A message already queued is taken without a timer (a shared reader's hot path).
                msg = self._queue.get_nowait() if self._queue.qsize() else await self._wait(_LOST_AFTER_S)
            except TimeoutError:
                if self._owed and loop.time() - self._pulled_at > _LOST_AFTER_S:
                    self._owed = 0  # the pull and its expiry notice were lost (a reconnection)
                await self._pull()
                continue
            if not msg.reply:
                status = (msg.headers or {}).get("Status", "")
                if status not in ("408", "404", "100", ""):
                    description = (msg.headers or {}).get("Description", "")
                    raise TailLost(f"activation stream consumer: {status} {description}".strip())
                await self._pull()
                continue
            await self._pull()
            return self._entry(msg)

    async def _wait(self, timeout_s: float) -> Msg:
        async with asyncio.timeout(timeout_s):
            return await self._queue.get()

    def _entry(self, msg: Msg) -> Entry:
        meta = msg.metadata
        if self._consumer_seq and meta.sequence.consumer != self._consumer_seq + 1:
            raise TailLost("activation stream consumer skipped messages")
        self._consumer_seq = meta.sequence.consumer
        self._pending = meta.num_pending
        headers = dict(msg.headers) if msg.headers else None
        return Entry(position=int(meta.sequence.stream), payload=msg.data, headers=headers)


async def first_position(bus: JetStreamBus) -> int:
    """The oldest position ACTIVATIONS still holds (0 when it never held any)."""
    try:
        info = await bus.js.stream_info(subjects.ACTIVATIONS_STREAM)
    except Exception as exc:
        raise translate(exc, "reading the activation stream") from None
    if info.state.messages == 0:
        # An emptied stream holds nothing before its next message.
        return info.state.last_seq + 1 if info.state.last_seq else 0
    return int(info.state.first_seq)


async def last_position(bus: JetStreamBus) -> int:
    """The newest position ACTIVATIONS holds or held (0 when it never held any)."""
    try:
        info = await bus.js.stream_info(subjects.ACTIVATIONS_STREAM)
    except Exception as exc:
        raise translate(exc, "reading the activation stream") from None
    return int(info.state.last_seq or 0)


__all__ = ["WINDOW", "ActivationTail", "Entry", "TailLost", "Unavailable", "first_position", "last_position"]
