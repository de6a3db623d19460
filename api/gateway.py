"""The API side of invoking: publishes invocations, hands each waiting request its record, knows which
invokers are up; and the `{"activationId"}` answer (body and header) of an invoke or a fire that is not done."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from broker import codec, large_records, subjects
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.errors import NotFound, Unavailable
from broker.health import InvokerRegistry
from broker.invocations import RESULT_HEADER, Invocation
from broker.queues import EventQueues, InvokeQueues, subject_of
from broker.topology import INVOKERS_BUCKET

ACTIVATION_ID_HEADER: Final = "x-openwhisk-activation-id"
# While a blocking request waits for the invoker's notice, the store is checked this often, in case the
# notice was lost (e.g. the API's NATS connection was re-established at that moment).
STORE_POLL_S: Final = 5.0


class ActivationIdBody(msgspec.Struct, frozen=True, kw_only=True):
    """The 202 answer to an invoke or a fire that is not done: the activation id to look up later."""

    activationId: str


class InvokeGateway:
    """The API side of invoking: publishes invocations, hands each waiting request its record, and knows
    which invokers are up. `async with InvokeGateway(bus) as gateway: create_app(…, gateway=gateway)`."""

    def __init__(
        self,
        bus: JetStreamBus,
        *,
        health_bucket: str = INVOKERS_BUCKET,
        store_poll_s: float = STORE_POLL_S,
        queues: InvokeQueues | None = None,
    ) -> None:
        self.bus = bus
        self.queues = queues or InvokeQueues(bus, bus.settings)
        self.events = EventQueues(bus, bus.settings)
        self.registry = InvokerRegistry(bus, bucket=health_bucket)
        self.actions = EntityCache(bus, EntityStore(bus))
        self.store_poll_s = store_poll_s
        self._inbox = ""
        self._sub: Any = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> InvokeGateway:
        self._inbox = self.bus.new_inbox()
        # One subscription for every waiting request: a per-request SUB/UNSUB would cost two messages each.
        self._sub = await self.bus.subscribe(f"{self._inbox}.*", self._on_record)
        await self.registry.__aenter__()
        await self.actions.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.actions.__aexit__(exc_type, exc, tb)
        await self.registry.__aexit__(exc_type, exc, tb)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        for fut in self._waiting.values():
            fut.cancel()

    async def _on_record(self, msg: Msg) -> None:
        fut = self._waiting.get(msg.subject.rpartition(".")[2])
        if fut is not None and not fut.done():
            data = await large_records.with_result(self.bus, msg.data, msg.headers)
            if not fut.done():  # the wait may have ended while a large record was read
                fut.set_result(data)

    async def invoke(
        self,
        invocation: Invocation,
        wait_s: float | None,
        lookup: Callable[[], Awaitable[Activation | None]] | None = None,
        family: str | None = None,
    ) -> Activation | None:
        """Publish `invocation`; with `wait_s`, wait that long for its record (None when it is not done).
        503 when no healthy invoker runs `family` (the action's runtime family; None for a sequence)."""
        if not await self.registry.any_healthy(family):
            raise Unavailable()
        payload = self.bus.encode(invocation)  # merged parameters can pass what the body alone could not
        subject = subject_of(invocation)
        await self.queues.ensure(invocation.namespace)  # its namespace's queue, before its first run
        aid = invocation.activationId
        if wait_s is None:
            await self.bus.publish(subject, payload, msg_id=aid)
            return None
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[aid] = fut  # registered before publishing: the record cannot arrive unseen
        try:
            await self.bus.publish(
                subject, payload, msg_id=aid, headers={RESULT_HEADER: f"{self._inbox}.{aid}"}
            )
            data = await self._wait(fut, wait_s, lookup)
        finally:
            self._waiting.pop(aid, None)
        return None if data is None else codec.decode(data, Activation)

    async def call_feed(self, invocation: Invocation, wait_s: float) -> Activation | None:
        """Serve a catalog feed action's invocation by the feeds role (feeds/lifecycle.py), which records it:
        its record, None when it did not answer within `wait_s`; 503 when no feeds process runs."""
        data = await self.bus.request(
            subjects.FEED_LIFECYCLE_SUBJECT,
            codec.encode(invocation),
            wait_s,
            unavailable="No feeds process is running to serve the feed's lifecycle call.",
        )
        return None if data is None else codec.decode(data, Activation)

    async def _wait(
        self,
        fut: asyncio.Future[bytes],
        wait_s: float,
        lookup: Callable[[], Awaitable[Activation | None]] | None,
    ) -> bytes | None:
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(fut), min(left, self.store_poll_s))
            if lookup is not None:
                with contextlib.suppress(NotFound, Unavailable):
                    found = await lookup()
                    if found is not None:
                        return codec.encode(found)
