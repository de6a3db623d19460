"""The one consumer loop: durable pull consumers whose messages go to a handler, one at a time or in batches.

Every JetStream consumer of the pipeline (rule engine, invoker, recorder) is a handler on this worker; the
invoker's worker reads several consumers at once (one queue per namespace, added as they appear). For each, it
keeps pull requests open for as many messages as it has free slots (so a message starts the moment it is
stored, with no polling), tells JetStream that long handlers are still working (`in_progress`), terminates messages
it cannot decode (counted), hands a message that failed its last allowed delivery to a give-up hook, and drains
on exit: stop pulling, let in-flight work finish under a deadline, then cancel it and nak what is left.

Nothing here is stopped by cancelling a task inside nats-py: on Python 3.11 `asyncio.wait_for` (which nats-py
uses) can swallow a cancellation (gh-86296). The worker is driven by message callbacks and a Periodic ticker,
both stopped by events; only a handler that outlives the drain deadline is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.bus import JetStreamBus
from broker.errors import BackboneUnavailable, SquallError
from broker.periodic import Periodic
from broker.topology import ConsumerSpec

log = logging.getLogger("squall.worker")

T = TypeVar("T")

PULL_EXPIRES_S: Final = 5.0  # pull requests are renewed this often (one lost in a reconnect is forgotten)
RETRY_DELAY_S: Final = 1.0  # a failed message comes back after this long
NAK_DEADLINE_S: Final = 1.0  # cancelled handlers get this long to nak their message


class Retry(msgspec.Struct, frozen=True):
    """A handler's verdict: deliver this message again after `delay_s` (None from a handler means done)."""

    delay_s: float = RETRY_DELAY_S


@dataclass(slots=True, eq=False)
class Queue:
    """One consumer a worker reads, and its pull state."""

    spec: ConsumerSpec
    inbox: str
    provisioned: bool  # made by the worker itself (re-made if deleted), or found (dropped if deleted)
    sub: Subscription | None = None  # JetStream delivers with the stored subject: routed by subscription
    pending: int = 0  # messages asked for in pull requests and not yet delivered or expired
    last_pull: float = 0.0
    # The connection's reconnect count when the open pulls were sent: pulls sent before a reconnection (to
    # another server, perhaps) are gone, whatever `pending` says.
    reconnects: int = 0
    in_flight: int = 0  # delivered and not done


@dataclass(slots=True)
class Delivery(Generic[T]):
    """One message and its decoded value."""

    msg: Msg
    value: T
    queue: Queue
    since: float = field(default_factory=time.monotonic)  # last sign of life told to JetStream

    @property
    def deliveries(self) -> int:
        """1 on the first delivery; redeliveries after a nak, a crash or an ack timeout count up."""
        return int(self.msg.metadata.num_delivered)

    @property
    def stored_ms(self) -> int:
        """When JetStream stored the message (epoch ms)."""
        return int(self.msg.metadata.timestamp.timestamp() * 1000)

    def header(self, name: str) -> str | None:
        return self.msg.headers.get(name) if self.msg.headers else None


Handler = Callable[[Delivery[T]], Awaitable[Retry | None]]
BatchHandler = Callable[[list[Delivery[T]]], Awaitable[None]]
# Called instead of another retry once a message failed its spec's `max_deliveries`th delivery; the message is
# acked after it returns (a hook that raises leaves it for another delivery).
GiveUp = Callable[[Delivery[T], Exception], Awaitable[None]]


def reason_of(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SquallError) else str(exc) or type(exc).__name__


class StreamWorker(Generic[T]):
    """`async with StreamWorker(bus, spec, decode, handle=…)` (or `handle_batch=…`) consumes until the block ends.

    `spec` may be None for a worker whose consumers come and go (`add`, `remove`): each gets `max_in_flight`.
    """

    def __init__(
        self,
        bus: JetStreamBus,
        spec: ConsumerSpec | None,
        decode: Callable[[bytes], T],
        *,
        handle: Handler[T] | None = None,
        handle_batch: BatchHandler[T] | None = None,
        give_up: GiveUp[T] | None = None,
        max_in_flight: int | Callable[[], int] = 256,
        batch_size: int = 256,
        gather_s: float = 0.02,
        drain_timeout_s: float = 5.0,
        name: str = "",
    ) -> None:
        if (handle is None) == (handle_batch is None):
            raise ValueError("a stream worker takes either a handler or a batch handler")
        self.bus = bus
        self.spec = spec
        self.decode = decode
        self.name = name or (spec.durable if spec is not None else "worker")
        self.drain_timeout_s = drain_timeout_s
        self.batch_size = batch_size
        self.gather_s = gather_s
        self._handle = handle
        self._handle_batch = handle_batch
        self._give_up = give_up
        self._capacity = max_in_flight
        self.handled = 0  # messages done (acked after their handler)
        self.terminated = 0  # undecodable messages dropped
        self.gave_up = 0
        # single handlers
        self._tasks: dict[int, tuple[Delivery[T], asyncio.Task[None]]] = {}
        self._ids = itertools.count()
        # batch handler: arrived, and being handled
        self._buffer: list[Delivery[T]] = []
        self._writing: list[Delivery[T]] = []
        self._ready = asyncio.Event()
        self._batches: asyncio.Task[None] | None = None
        # pulling: an inbox and its subscription for every consumer read
        self._queues: dict[str, Queue] = {}  # by durable name
        self._stopping = False
        ack_wait_s = spec.ack_wait_s if spec is not None else 30.0
        self._ticker = Periodic(self._tick, min(0.25, ack_wait_s / 3), name=f"worker-{self.name}")

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def __aenter__(self) -> StreamWorker[T]:
        if self._handle_batch is not None:
            self._batches = asyncio.create_task(self._run_batches(), name=f"batches-{self.name}")
        await self._ticker.__aenter__()
        if self.spec is not None:
            await self.add(self.spec)
        return self

    async def add(self, spec: ConsumerSpec, *, provision: bool = True) -> None:
        """Read one more consumer: `provision` makes (or updates) it first, else it must exist."""
        if self._stopping or spec.durable in self._queues:
            return
        if provision:
            await self.bus.provision_consumer(spec)  # a no-op unless this worker's spec differs (tests)
        queue = Queue(spec=spec, inbox=self.bus.new_inbox(), provisioned=provision)
        queue.sub = await self.bus.subscribe(queue.inbox, functools.partial(self._on_message, queue))
        self._queues[spec.durable] = queue
        await self._top_up(queue)

    async def remove(self, durable: str) -> None:
        """Stop reading a consumer; what it delivered still finishes."""
        queue = self._queues.pop(durable, None)
        if queue is not None:
            await _unsubscribe(queue)

    @property
    def durables(self) -> set[str]:
        return set(self._queues)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        deadline = time.monotonic() + self.drain_timeout_s
        # JetStream drops the pull requests of an inbox nobody listens to, so unsubscribing first means no new
        # work comes here; naking it instead would bounce it back to our open requests, spending its deliveries.
        for queue in self._queues.values():
            await _unsubscribe(queue)
        self._ready.set()
        running = [task for _, task in self._tasks.values()]
        if self._batches is not None:
            running.append(self._batches)
        if running:
            await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        late = [task for task in running if not task.done()]
        for task in late:
            task.cancel()  # a single handler naks its message as it goes: another worker takes it now
        if late:
            await asyncio.wait(late, timeout=NAK_DEADLINE_S)
        for delivery in [*self._writing, *self._buffer]:
            with contextlib.suppress(Exception):
                await delivery.msg.nak()
        self._buffer.clear()
        self._writing = []
        await self._ticker.__aexit__(None, None, None)  # it told JetStream about long handlers until now

    @property
    def capacity(self) -> int:
        return self._capacity() if callable(self._capacity) else self._capacity

    @property
    def in_flight(self) -> int:
        """Messages taken from the stream and not yet done."""
        return len(self._tasks) + len(self._buffer) + len(self._writing)

    # -- pulling -------------------------------------------------------------------------------------------

    async def _top_up(self, queue: Queue) -> None:
        """Keep pull requests open on `queue` for as many messages as it has free slots."""
        if self._stopping or self._queues.get(queue.spec.durable) is not queue:
            return
        now = time.monotonic()
        reconnects = self.bus.reconnects
        if queue.pending > 0 and (
            reconnects != queue.reconnects or now - queue.last_pull > PULL_EXPIRES_S + 2.0
        ):
            queue.pending = 0  # their expiry notices were lost (e.g. a reconnect): they are gone
        capacity = self.capacity
        free = capacity - queue.in_flight - queue.pending
        if free <= 0 or (queue.pending > 0 and free < max(1, capacity // 4)):
            return
        queue.pending += free
        queue.last_pull = now
        queue.reconnects = reconnects
        try:
            await self.bus.pull(queue.spec, queue.inbox, free, PULL_EXPIRES_S)
        except Exception as exc:
            queue.pending -= free
            log.warning("%s cannot ask %s for messages: %s", self.name, queue.spec.durable, reason_of(exc))

    async def _tick(self) -> None:
        """Renews pull requests as they expire, and tells JetStream that long handlers are still working."""
        for queue in list(self._queues.values()):
            await self._top_up(queue)
        now = time.monotonic()
        working = [delivery for delivery, _ in self._tasks.values()]
        for delivery in [*working, *self._writing, *self._buffer]:
            if now - delivery.since >= delivery.queue.spec.ack_wait_s / 3:
                delivery.since = now
                with contextlib.suppress(Exception):
                    await delivery.msg.in_progress()

    async def _on_message(self, queue: Queue, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None and not msg.data:
            await self._on_status(queue, msg, status)
            return
        queue.pending = max(0, queue.pending - 1)
        if self._stopping:
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        try:
            value = self.decode(msg.data)
        except (SquallError, msgspec.DecodeError):
            # A message that cannot be read would come back forever; keep it out and say so.
            self.terminated += 1
            log.error("%s: dropping an unreadable message (stream seq %s)", self.name, _seq(msg))
            with contextlib.suppress(Exception):
                await msg.term()
            await self._top_up(queue)
            return
        delivery = Delivery(msg, value, queue)
        queue.in_flight += 1
        if self._handle_batch is not None:
            self._buffer.append(delivery)
            if len(self._buffer) in (1, self.batch_size):
                self._ready.set()  # a first message starts the gathering, a full batch ends it
            return
        key = next(self._ids)
        self._tasks[key] = (delivery, asyncio.create_task(self._run_one(key, delivery)))

    async def _on_status(self, queue: Queue, msg: Msg, status: str) -> None:
        if status == "100":  # idle heartbeat
            return
        assert msg.headers is not None
        left = msg.headers.get("Nats-Pending-Messages")
        if left is not None and left.isdigit():
            queue.pending = max(0, queue.pending - int(left))
        elif status in ("404", "408", "409"):
            queue.pending = 0
        if status == "409" and "Consumer Deleted" in msg.headers.get("Description", ""):
            if not queue.provisioned:
                await self.remove(queue.spec.durable)  # whoever made it took it away
                return
            with contextlib.suppress(Exception):
                await self.bus.provision_consumer(queue.spec)
        await self._top_up(queue)

    # -- handling ------------------------------------------------------------------------------------------

    async def _run_one(self, key: int, delivery: Delivery[T]) -> None:
        assert self._handle is not None
        msg = delivery.msg
        try:
            verdict = await self._handle(delivery)
            if verdict is None:
                await msg.ack()
                self.handled += 1
            else:
                await msg.nak(delay=verdict.delay_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            await self._failed(delivery, exc)
        finally:
            self._tasks.pop(key, None)
            delivery.queue.in_flight -= 1
            await self._top_up(delivery.queue)

    async def _failed(self, delivery: Delivery[T], exc: Exception) -> None:
        """Try again later; after the spec's last delivery, let the give-up hook record the failure, so that a
        message that cannot be processed neither loops forever nor vanishes unseen."""
        reason = reason_of(exc)
        # NATS gone for a moment (a reconnection, a stream's election) is no fault of the message: it waits for
        # the backbone however long that takes, instead of spending its deliveries and being given up on.
        passing = isinstance(exc, BackboneUnavailable)
        if self._give_up is None or passing or delivery.deliveries < delivery.queue.spec.max_deliveries:
            log.warning(
                "%s: message %s not processed (%s); delivered again", self.name, _seq(delivery.msg), reason
            )
            with contextlib.suppress(Exception):
                await delivery.msg.nak(delay=RETRY_DELAY_S)
            return
        try:
            await self._give_up(delivery, exc)
            await delivery.msg.ack()
            self.gave_up += 1
        except Exception as hook_exc:
            log.warning("%s: giving up on message %s failed: %s", self.name, _seq(delivery.msg), hook_exc)
            with contextlib.suppress(Exception):
                await delivery.msg.nak(delay=RETRY_DELAY_S)

    async def _run_batches(self) -> None:
        """Hands the arrived messages to the batch handler: when `batch_size` arrived, or `gather_s` after the
        first of a batch (one write of many costs about what a write of one does)."""
        assert self._handle_batch is not None
        while True:
            if not self._buffer:
                if self._stopping:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            if len(self._buffer) < self.batch_size and not self._stopping:
                left = self.gather_s - (time.monotonic() - self._buffer[0].since)
                if left > 0:
                    self._ready.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ready.wait(), left)
                    continue
            self._writing, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
            await self._run_batch(self._writing)
            queues = {delivery.queue for delivery in self._writing}
            for delivery in self._writing:
                delivery.queue.in_flight -= 1
            self._writing = []
            for queue in queues:
                await self._top_up(queue)

    async def _run_batch(self, batch: list[Delivery[T]]) -> None:
        assert self._handle_batch is not None
        try:
            await self._handle_batch(batch)
        except asyncio.CancelledError:
            raise  # the drain naks what is left
        except Exception:
            # The loop must outlive any one failure: the batch comes back after the delay.
            log.exception(
                "%s: handling %d messages failed; they will be delivered again", self.name, len(batch)
            )
            for delivery in batch:
                with contextlib.suppress(Exception):
                    await delivery.msg.nak(delay=RETRY_DELAY_S)
            return
        for delivery in batch:
            with contextlib.suppress(Exception):
                await delivery.msg.ack()
        self.handled += len(batch)


async def _unsubscribe(queue: Queue) -> None:
    if queue.sub is not None:
        with contextlib.suppress(Exception):
            await queue.sub.unsubscribe()
        queue.sub = None


def _seq(msg: Msg) -> object:
    with contextlib.suppress(Exception):
        return msg.metadata.sequence.stream
    return "?"
