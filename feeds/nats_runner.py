"""The NATS-subject feeds firing: one durable consumer on EVENTS per registration, read by one stream worker.

Every feeds process watches the registrations (core NATS on the KV bucket's subjects, plus a listing at start
and after a reconnect) and reads every active natsFeed's consumer: the processes share the durable consumers, so
each message goes to one of them. A message is acknowledged only once its fire is accepted (the event durably on
TRIGGERS); until then a crash means redelivery, and the fire's idempotency key (broker/feeds nats_feed.message_key)
turns the redelivery into the same activation. Throttled → delivered again at the next minute; the trigger gone
(404/403) → the feed is disabled (OpenWhisk's rule for alarms) and the message dropped; a message that can never
fire (too large, refused) is dropped and noted as the feed's last error. A paused feed keeps its consumer:
its messages wait in EVENTS (within the stream's bounds) and fire on UNPAUSE. DELETE removes the consumer.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from broker import codec, metrics, subjects, trace_context
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.entity_store import is_tombstone
from broker.errors import (
    BadRequest,
    ConcurrentModification,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SquallError,
    Throttled,
)
from broker.feed_registry import AUTO, FeedReason, FeedRegistration, FeedRegistry
from broker.firing import Fire, TriggerFiring
from broker.periodic import Periodic
from broker.stream_worker import Delivery, Retry, StreamWorker, reason_of
from broker.topology import ConsumerSpec
from feeds.nats_feed import (
    DURABLE_PREFIX,
    PROVIDER,
    durable_of,
    message_headers,
    message_key,
    message_payload,
    throttle_delay,
)

log = logging.getLogger("squall.feeds.nats")

FLUSH_S: Final = 1.0  # how often fire counts reach the feeds' statuses (one KV write per feed, not per fire)
_DISABLING: Final = ((NotFound, 404), (Forbidden, 403))
_SKIPPING: Final = ((PayloadTooLarge, 413), (BadRequest, 400))


@dataclass(slots=True)
class _Tally:
    """Fires and errors not yet written to a feed's status."""

    fired: int = 0
    last_fire: int | None = None
    error: str | None = None


class NatsFeedRunner:
    """`async with NatsFeedRunner(bus, firing, ack_wait_s=…)`: natsFeed registrations fire until the block ends."""

    def __init__(
        self,
        bus: JetStreamBus,
        firing: TriggerFiring,
        *,
        ack_wait_s: float = 10.0,
        drain_timeout_s: float = 5.0,
        max_in_flight: int = 64,
    ) -> None:
        self.bus = bus
        self.firing = firing
        self.registry = FeedRegistry(bus)
        self.ack_wait_s = ack_wait_s
        self.worker: StreamWorker[bytes] = StreamWorker(
            bus,
            None,
            bytes,
            handle=self._handle,
            give_up=self._give_up,
            max_in_flight=max_in_flight,
            drain_timeout_s=drain_timeout_s,
            name="nats-feeds",
        )
        self._feeds: dict[str, FeedRegistration] = {}  # by durable
        self._durables: dict[str, str] = {}  # KV key → durable
        self._touched: set[str] = set()  # KV keys changed while a listing was being read
        self._reconnects = -1
        self._tallies: dict[str, _Tally] = {}  # by KV key
        self._sub: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> NatsFeedRunner:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.worker)
            self._sub = await self.bus.subscribe(f"$KV.{subjects.FEEDS_BUCKET}.>", self._on_change)
            stack.push_async_callback(self._unsubscribe)
            await self._resync(remove_strays=True)
            await stack.enter_async_context(Periodic(self._tick, FLUSH_S, name="nats-feeds-status"))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
        with contextlib.suppress(Exception):
            await self._flush()

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    # -- following the registrations --------------------------------------------------------------------------

    async def _on_change(self, msg: Msg) -> None:
        key = msg.subject.removeprefix(f"$KV.{subjects.FEEDS_BUCKET}.")
        self._touched.add(key)
        try:
            if is_tombstone(msg.headers) or not msg.data:
                await self._drop(key)
            else:
                await self._follow(key, codec.decode(msg.data, FeedRegistration))
        except Exception as exc:
            log.warning("NATS feeds: following %s failed: %s", key, reason_of(exc))

    async def _resync(self, *, remove_strays: bool = False) -> None:
        """Follow every registration listed (those changed meanwhile are left to their change messages)."""
        self._reconnects = self.bus.reconnects
        self._touched = set()
        listed = {
            subjects.entity_key(reg.namespace, reg.trigger): reg
            for reg in await self.registry.list()
            if reg.provider == PROVIDER
        }
        for key, registration in listed.items():
            if key not in self._touched:
                try:
                    await self._follow(key, registration)
                except SquallError as exc:  # one feed's consumer failing must not keep the others from firing
                    log.warning("NATS feeds: cannot follow %s: %s", key, exc.message)
        for key in set(self._durables) - set(listed) - self._touched:
            await self._drop(key)
        if remove_strays:
            # Consumers of feeds deleted while no feeds process ran.
            wanted = {durable_of(reg) for reg in listed.values()}
            for state in await self.bus.consumers(subjects.EVENTS_STREAM):
                if state.name.startswith(DURABLE_PREFIX) and state.name not in wanted:
                    await self.bus.delete_consumer(subjects.EVENTS_STREAM, state.name)

    async def _follow(self, key: str, registration: FeedRegistration) -> None:
        if registration.provider != PROVIDER:
            await self._drop(key)
            return
        durable = durable_of(registration)
        before = self._durables.get(key)
        if before is not None and before != durable:
            await self._drop(key)  # the trigger got a new feed
        spec = ConsumerSpec(
            stream=subjects.EVENTS_STREAM,
            durable=durable,
            filter_subject=str(registration.config.get("subject")),
            deliver_since_ms=registration.created,
            ack_wait_s=self.ack_wait_s,
        )
        previous = self._feeds.get(durable)
        self._feeds[durable] = registration
        self._durables[key] = durable
        if previous is not None and previous.config != registration.config:
            await self.worker.remove(durable)  # re-added below with the new filter
        if registration.active:
            if durable not in self.worker.durables:
                await self.worker.add(spec)
        else:
            await self.bus.provision_consumer(spec)  # paused: its messages wait for the UNPAUSE
            await self.worker.remove(durable)

    async def _drop(self, key: str) -> None:
        durable = self._durables.pop(key, None)
        if durable is None:
            return
        self._feeds.pop(durable, None)
        await self.worker.remove(durable)
        await self.bus.delete_consumer(subjects.EVENTS_STREAM, durable)

    # -- firing ---------------------------------------------------------------------------------------------

    async def _handle(self, delivery: Delivery[bytes]) -> Retry | None:
        registration = self._feeds.get(delivery.queue.spec.durable)
        if registration is None or not registration.active:
            return Retry()  # being paused or removed: left to the consumer
        msg = delivery.msg
        fire = Fire(
            namespace=registration.namespace,
            trigger=registration.trigger,
            subject=registration.subject,
            payload=message_payload(delivery.value),
            idempotency_key=message_key(delivery.header("Nats-Msg-Id"), msg.metadata.sequence.stream),
            headers=message_headers(msg.subject, msg.headers),
            # A publisher's W3C trace context goes on through the fire; without one, the fire starts a trace.
            traceparent=trace_context.parse(delivery.header(trace_context.TRACEPARENT_HEADER)) or "",
        )
        key = subjects.entity_key(registration.namespace, registration.trigger)
        try:
            await self.firing.fire(fire)
        except Throttled:
            return Retry(throttle_delay(now_ms()))
        except (NotFound, Forbidden) as exc:
            status = next(code for cls, code in _DISABLING if isinstance(exc, cls))
            await self._disable(registration, status, exc.message)
            return None
        except (PayloadTooLarge, BadRequest) as exc:
            status = next(code for cls, code in _SKIPPING if isinstance(exc, cls))
            self._tally(
                key
            ).error = f"message {msg.metadata.sequence.stream} dropped ({status}): {exc.message}"
            return None
        tally = self._tally(key)
        tally.fired += 1
        tally.last_fire = now_ms()
        counters = metrics.current()
        counters.feed_fires("nats").inc()
        counters.feed_fire_lag("nats").observe(max(0, tally.last_fire - delivery.stored_ms) / 1000)
        return None

    async def _give_up(self, delivery: Delivery[bytes], exc: Exception) -> None:
        registration = self._feeds.get(delivery.queue.spec.durable)
        if registration is not None:
            key = subjects.entity_key(registration.namespace, registration.trigger)
            seq = delivery.msg.metadata.sequence.stream
            self._tally(key).error = f"message {seq} dropped after repeated failures: {reason_of(exc)}"

    async def _disable(self, registration: FeedRegistration, status: int, message: str) -> None:
        """OpenWhisk's rule: a fire the platform refuses for good (the trigger is gone) disables the feed."""
        reason = FeedReason(
            kind=AUTO, message=f"Disabled after a fire answered {status}: {message}", statusCode=status
        )
        for _ in range(3):
            try:
                current, revision = await self.registry.get(registration.namespace, registration.trigger)
            except NotFound:
                return  # deleted meanwhile
            if not current.active or current.created != registration.created:
                return
            changed = msgspec.structs.replace(current, active=False, reason=reason, updated=now_ms())
            try:
                await self.registry.update(changed, revision)
            except ConcurrentModification:
                continue
            log.info(
                "NATS feed of /%s/%s disabled: %s", registration.namespace, registration.trigger, message
            )
            return

    # -- statuses -------------------------------------------------------------------------------------------

    def _tally(self, key: str) -> _Tally:
        return self._tallies.setdefault(key, _Tally())

    async def _tick(self) -> None:
        if self.bus.reconnects != self._reconnects:
            with contextlib.suppress(SquallError):
                await self._resync()  # changes may have been missed while disconnected
        await self._flush()

    async def _flush(self) -> None:
        tallies, self._tallies = self._tallies, {}
        for key, tally in tallies.items():
            if key not in self._durables:
                continue  # deleted meanwhile: no status may outlive its feed
            ns_token, _, trigger_token = key.partition(".")
            namespace, trigger = subjects.untoken(ns_token), subjects.untoken(trigger_token)
            # Read-modify-write: two processes flushing the same feed at once may lose a count (health, not
            # billing); the activation records are the exact history.
            status = await self.registry.status(namespace, trigger)
            changes: dict[str, Any] = {"fireCount": status.fireCount + tally.fired}
            if tally.last_fire is not None:
                changes["lastFire"] = tally.last_fire
            if tally.error is not None:
                changes["lastError"] = tally.error
            await self.registry.put_status(namespace, trigger, msgspec.structs.replace(status, **changes))
