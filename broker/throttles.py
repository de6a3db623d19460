"""Per-namespace throttles as OpenWhisk applies them: invocations and fires per minute, activations in flight.

Rates count in this process only, as OpenWhisk counts per controller: N API processes let a namespace make up
to N times its `invocationsPerMinute` (OpenWhisk divides the limit by the number of controllers instead; Squall's
processes do not know how many of them run). The rule engine, in the broker process, keeps counts of its own
for the invocations its rules make.

Activations in flight count across every process: the INVOKE stream is a work queue that keeps each invocation
until an invoker acks it after the run, so the messages under `invoke.<ns>.>` are exactly the namespace's
queued and running activations. They are filed under the namespace that causes them (broker/queues.py
`subject_of`), as OpenWhisk counts them: invoking another namespace's shared action counts against the caller's
limits, never the owner's. Web actions are the one exception, as in OpenWhisk: their runs are the owner's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from broker import metrics, subjects
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import NotFound, Throttled
from broker.kv_cache import KvCache
from broker.limits import EffectiveLimits, effective_limits, namespace_defaults
from broker.namespaces import Namespace

INVOKE: Final = "invoke"
FIRE: Final = "fire"
WEB: Final = "web"

# How long a reading of the INVOKE stream stands in for the truth. Activations admitted since are added to it;
# those that finished since are not taken off, so a reading is read again before it is allowed to refuse.
IN_FLIGHT_TTL_S: Final = 0.2
# A run's message leaves INVOKE once its record is stored, and its caller may hear the result before that (the
# invoker sends it first, to answer sooner): a caller at its limit that calls again at once would be refused
# for a run that has ended. So a refusal stands only on SETTLE_READS further readings, SETTLE_POLL_S apart
# (shared by every refused request of the namespace: at most one read per pause).
SETTLE_READS: Final = 5
SETTLE_POLL_S: Final = 0.02
_MAX_READINGS = 10_000


# -- the pure decisions ------------------------------------------------------------------------------------


def too_many_per_minute(count: int, allowed: int) -> str | None:
    """OpenWhisk's 429 for a rate, where `count` includes the request being decided; None when it may pass."""
    if count <= allowed:
        return None
    return f"Too many requests in the last minute (count: {count}, allowed: {allowed})."


def too_many_in_flight(in_flight: int, allowed: int, adding: int = 1) -> str | None:
    """OpenWhisk's 429 for concurrency, where `in_flight` excludes the `adding` activations being decided."""
    if in_flight + adding <= allowed:
        return None
    return f"Too many concurrent requests in flight (count: {in_flight}, allowed: {allowed})."


_MAX_BOOKED = 10_000


class MinuteCounter:
    """Counts per key within the current calendar minute of `clock` (epoch seconds), as OpenWhisk's
    RateThrottler: the count restarts at 0 when the minute turns, not a minute after the first request.

    Refused requests count too (OpenWhisk's do), so a caller hammering past its limit stays refused until the
    minute turns.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minute = -1
        self._counts: dict[Hashable, int] = {}

    def add(self, key: Hashable, n: int = 1) -> int:
        """Count `n` for `key` and return its count in the current minute, those `n` included."""
        minute = int(self._clock() // 60)
        if minute != self._minute:
            # Every key counted so far belongs to a minute that is over: nothing else to expire.
            self._minute = minute
            self._counts.clear()
        count = self._counts.get(key, 0) + n
        self._counts[key] = count
        return count


class MinuteBooking:
    """Books event-driven runs into calendar minutes: the current one while it has room under the rate, else
    the first later minute that has. Runs are booked in order, so only the last booked minute of a key can
    have room: one (minute, count) per key is the whole state."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last: dict[Hashable, tuple[int, int]] = {}

    def book(self, key: Hashable, per_minute: int) -> int | None:
        """Book one run; None to start now, else the epoch ms of the minute it may start in."""
        now_minute = int(self._clock() // 60)
        minute, count = self._last.get(key, (now_minute, 0))
        if minute < now_minute:
            minute, count = now_minute, 0
        if count >= max(1, per_minute):
            minute, count = minute + 1, 0
        self._last[key] = (minute, count + 1)
        if len(self._last) > _MAX_BOOKED:
            self._forget_past(now_minute)
        return None if minute == now_minute else minute * 60_000

    def _forget_past(self, now_minute: int) -> None:
        self._last = {k: v for k, v in self._last.items() if v[0] >= now_minute}


# -- activations in flight -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Reading:
    count: int  # what the stream held when read
    read_at: float  # monotonic time the read started
    admitted: int = 0  # admitted by this process since, which the read may not have seen


class InFlightGauge:
    """Decides `concurrentInvocations` from readings of the INVOKE stream, kept for `ttl_s`.

    `read(None)` counts every message in the stream, `read(ns)` those of one namespace. The whole-stream
    reading is the cheap test: one read per `ttl_s` for the whole process, and while the stream holds fewer
    messages than a namespace may have in flight (say `guest` in standalone, or any namespace on a quiet
    system), that namespace cannot be over its limit and its own count is never read. Otherwise the namespace's
    reading decides; one that would refuse after admitting activations is read again first (those may have
    finished), so a refusal never rests on this process's own estimate, nor on one reading: it is read again
    `settle_reads` times, `settle_poll_s` apart, for runs that ended a moment ago. Concurrent reads of one key
    share one request.
    """

    def __init__(
        self,
        read: Callable[[str | None], Awaitable[int]],
        *,
        ttl_s: float = IN_FLIGHT_TTL_S,
        settle_reads: int = SETTLE_READS,
        settle_poll_s: float = SETTLE_POLL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.ttl_s = ttl_s
        self.settle_reads = settle_reads
        self.settle_poll_s = settle_poll_s
        self._monotonic = monotonic
        self._readings: dict[str | None, _Reading] = {}
        self._reading_now: dict[str | None, asyncio.Future[_Reading]] = {}

    async def admit(self, namespace: str, allowed: int, count: int = 1) -> str | None:
        """Admit `count` activations of `namespace` (counted until the next reading), or say why not."""
        whole = await self._reading(None)
        if too_many_in_flight(whole.count + whole.admitted, allowed, count) is None:
            self._count_admitted(namespace, count)
            return None
        own = await self._reading(namespace)
        refusal = too_many_in_flight(own.count + own.admitted, allowed, count)
        if refusal is not None and own.admitted:
            own = await self._reading(namespace, newer_than=own.read_at)
            refusal = too_many_in_flight(own.count + own.admitted, allowed, count)
        for _ in range(self.settle_reads if refusal is not None else 0):
            await asyncio.sleep(self.settle_poll_s)
            own = await self._reading(namespace, newer_than=self._monotonic() - self.settle_poll_s)
            refusal = too_many_in_flight(own.count + own.admitted, allowed, count)
            if refusal is None:
                break
        if refusal is None:
            self._count_admitted(namespace, count)
        return refusal

    def _count_admitted(self, namespace: str, count: int) -> None:
        for key in (None, namespace):
            reading = self._readings.get(key)
            if reading is not None:
                reading.admitted += count

    async def _reading(self, key: str | None, *, newer_than: float | None = None) -> _Reading:
        """The reading of `key`: the one kept while younger than the ttl or, with `newer_than`, one whose read
        started after that time. One read in flight per key, which every waiter it can serve joins."""
        while True:
            reading = self._readings.get(key)
            if reading is not None and (
                reading.read_at > newer_than
                if newer_than is not None
                else self._monotonic() - reading.read_at < self.ttl_s
            ):
                return reading
            pending = self._reading_now.get(key)
            if pending is None:
                pending = asyncio.ensure_future(self._read_into(key))
                self._reading_now[key] = pending
                pending.add_done_callback(lambda done: self._read_done(key, done))
            # Shielded: a waiter cancelled (its client gone) must not cancel the read the others wait for.
            reading = await asyncio.shield(pending)
            if newer_than is None or reading.read_at > newer_than:
                return reading
            # It had started too early for this waiter: the next one, started after it ended, will do.

    def _read_done(self, key: str | None, done: asyncio.Future[_Reading]) -> None:
        self._reading_now.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter was cancelled

    async def _read_into(self, key: str | None) -> _Reading:
        before = self._readings.get(key)
        admitted_before = before.admitted if before is not None else 0
        started = self._monotonic()
        if before is not None:  # later readings start later, even on a coarse (or a test's frozen) clock
            started = max(started, math.nextafter(before.read_at, math.inf))
        count = await self._read(key)
        # Activations admitted while the read was on its way may be missing from it: keep them counted.
        admitted_during = before.admitted - admitted_before if before is not None else 0
        reading = _Reading(count=count, read_at=started, admitted=admitted_during)
        if len(self._readings) >= _MAX_READINGS:
            self._readings.clear()  # crude, and rare: each namespace costs one read to come back
        self._readings[key] = reading
        return reading


# -- the component ---------------------------------------------------------------------------------------------


class Throttles:
    """The three per-namespace throttles; `async with Throttles(bus, store, settings) as throttles`.

    Limits come from the namespace's record (read through a KV cache that the record's writes invalidate), the
    settings' system values where it sets none. Checks in OpenWhisk's order: the rate first, counted even when
    concurrency then refuses.
    """

    def __init__(
        self,
        bus: JetStreamBus,
        store: EntityStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        in_flight_ttl_s: float = IN_FLIGHT_TTL_S,
    ) -> None:
        self.bus = bus
        self.store = store
        self.defaults = namespace_defaults(settings)
        self.web_per_minute = settings.web_requests_per_minute
        self._minutes = MinuteCounter(clock)
        self._booking = MinuteBooking(clock)
        self._in_flight = InFlightGauge(self._count_in_flight, ttl_s=in_flight_ttl_s)
        self._namespaces: KvCache[Namespace] = KvCache(bus, subjects.NAMESPACES_BUCKET)

    async def __aenter__(self) -> Throttles:
        await self._namespaces.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._namespaces.__aexit__(exc_type, exc, tb)

    async def limits_of(self, namespace: str) -> EffectiveLimits:
        async def load() -> Namespace:
            try:
                return await self.store.get_namespace(namespace)
            except NotFound:
                # A key whose namespace record is missing gets the system values (as `GET …/limits` shows).
                # Kept like a record: writing one invalidates it, and only authenticated names get here.
                return Namespace(name=namespace)

        record = await self._namespaces.get(subjects.token(namespace), load)
        assert record is not None  # load answers or raises
        return effective_limits(record.limits, self.defaults)

    async def check_fire(self, namespace: str) -> None:
        """Count one trigger fire; Throttled (429) past the namespace's `firesPerMinute`."""
        limits = await self.limits_of(namespace)
        refusal = too_many_per_minute(self._minutes.add((FIRE, namespace)), limits.firesPerMinute)
        if refusal is not None:
            metrics.current().throttled("fires_per_minute", namespace=namespace).inc()
            raise Throttled(refusal)

    async def check_web(self, namespace: str) -> None:
        """Count one anonymous web action request to `namespace`; Throttled (429) past `web_requests_per_minute`.
        Every such request counts (OPTIONS and refused ones too), so anonymous traffic has a bound of its own
        on top of `invocationsPerMinute`, which its runs are charged to as well."""
        refusal = too_many_per_minute(self._minutes.add((WEB, namespace)), self.web_per_minute)
        if refusal is not None:
            metrics.current().throttled("web_requests_per_minute", namespace=namespace).inc()
            raise Throttled(refusal)

    async def check_invoke(self, namespace: str, count: int = 1) -> None:
        """Count `count` activations; Throttled (429) past `invocationsPerMinute` or `concurrentInvocations`."""
        refusal = await self._admit(namespace, count)
        if refusal is not None:
            raise Throttled(refusal)

    async def _admit(self, namespace: str, count: int) -> str | None:
        limits = await self.limits_of(namespace)
        per_minute = self._minutes.add((INVOKE, namespace), count)
        refusal = too_many_per_minute(per_minute, limits.invocationsPerMinute)
        limit = "invocations_per_minute"
        if refusal is None:
            refusal = await self._in_flight.admit(namespace, limits.concurrentInvocations, count)
            limit = "concurrent_invocations"
        if refusal is not None:
            metrics.current().throttled(limit, namespace=namespace).inc()
        return refusal

    async def book_event_run(self, namespace: str) -> int | None:
        """An event-driven run is never refused: under `invocationsPerMinute` it starts now (None), over it in the
        first minute with room (its epoch ms). Its concurrency is the namespace's queue's business."""
        limits = await self.limits_of(namespace)
        return self._booking.book((INVOKE, namespace), limits.invocationsPerMinute)

    async def concurrency_of(self, namespace: str) -> int:
        return (await self.limits_of(namespace)).concurrentInvocations

    async def _count_in_flight(self, namespace: str | None) -> int:
        """Messages in the INVOKE stream: all of them, or those of one namespace."""
        # The server pages its per-subject answer past 100,000 subjects; no namespace has that many actions.
        total, _ = await self.bus.count(
            subjects.INVOKE_STREAM, None if namespace is None else subjects.invoke_filter(namespace)
        )
        return total
