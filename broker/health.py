"""Invoker health: heartbeats in a KV bucket, the up/unhealthy/down decision, and the registry that reads them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final

import msgspec
from nats.js.kv import KeyValue

from broker import codec, subjects
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.errors import BadRequest
from broker.periodic import Periodic
from broker.topology import INVOKERS_BUCKET, topology

log = logging.getLogger("squall.health")

HEARTBEAT_INTERVAL_S: Final = 1.0
# OpenWhisk's controller marks an invoker offline after 10 s without a ping.
OFFLINE_AFTER_MS: Final = 10_000
# ... and unhealthy when more than 3 of its last 10 activations were system errors.
ERROR_WINDOW: Final = 10
UNHEALTHY_ERRORS: Final = 3
ERROR_HORIZON_S: Final = 30.0  # system errors older than this no longer count

UP: Final = "up"
UNHEALTHY: Final = "unhealthy"
DOWN: Final = "down"


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """What an invoker says about itself every second."""

    id: str
    capacity_mb: int = 0  # memory the pool may give to containers
    free_mb: int = 0
    warm: int = 0  # containers kept warm (idle or busy) and stem cells
    in_flight: int = 0  # invocations taken from the stream and not yet finished
    started: int = 0  # epoch ms
    version: str = ""
    at: int = 0  # epoch ms of this heartbeat
    system_errors: int = 0  # of the last ERROR_WINDOW activations
    completed: int = 0  # invocations finished since the invoker started
    stopping: bool = False  # said once on a graceful stop: down at once, not after 10 s
    families: tuple[
        str, ...
    ] = ()  # the runtime families it runs (empty: an invoker from before they were said)


class Load(msgspec.Struct, frozen=True, kw_only=True):
    """The moving part of a heartbeat, asked of the invoker each time."""

    capacity_mb: int = 0
    free_mb: int = 0
    warm: int = 0
    in_flight: int = 0
    system_errors: int = 0
    completed: int = 0
    families: tuple[str, ...] = ()


# What an invoker that does not say its runtime families runs: the two Squall had before it said them.
LEGACY_FAMILIES: Final = ("python", "nodejs")


def offers(beat: Heartbeat, family: str | None) -> bool:
    """Whether the invoker runs actions of `family` (None: no runtime needed, e.g. a sequence)."""
    return family is None or family in (beat.families or LEGACY_FAMILIES)


def invoker_state(beat: Heartbeat, now: int) -> str:
    """OpenWhisk's invoker states, decided from the last heartbeat alone."""
    if beat.stopping or now - beat.at > OFFLINE_AFTER_MS:
        return DOWN
    if beat.system_errors > UNHEALTHY_ERRORS:
        return UNHEALTHY
    return UP


def ordered(beats: Iterable[Heartbeat]) -> list[Heartbeat]:
    """Oldest invoker first: the order that numbers them `invoker0`, `invoker1`, …"""
    return sorted(beats, key=lambda b: (b.started, b.id))


def listing(beats: Iterable[Heartbeat], now: int) -> dict[str, str]:
    """`GET /invokers` as OpenWhisk's controller answers it: `{"invoker0/0": "up", …}`, oldest first.

    The route needs no key, so it names invokers by their rank only: their ids carry host names and pids,
    which tell a stranger what runs where."""
    return {f"invoker{i}/{i}": invoker_state(b, now) for i, b in enumerate(ordered(beats))}


def healthy_count(beats: Iterable[Heartbeat], now: int, family: str | None = None) -> int:
    """How many invokers are up (and run `family`, when one is given)."""
    return sum(1 for b in beats if invoker_state(b, now) == UP and offers(b, family))


class ErrorWindow:
    """The last ERROR_WINDOW outcomes of an invoker, and how many of the recent ones were system errors.

    OpenWhisk probes an unhealthy invoker with test actions; here old errors simply stop counting after
    `horizon_s`, so an invoker that nobody sends work to (the API refuses while none is up) gets its chance
    again instead of staying unhealthy for ever.
    """

    def __init__(self, size: int = ERROR_WINDOW, horizon_s: float = ERROR_HORIZON_S) -> None:
        self.horizon_s = horizon_s
        self._outcomes: collections.deque[tuple[float, bool]] = collections.deque(maxlen=size)

    def record(self, system_error: bool, now: float | None = None) -> None:
        self._outcomes.append((time.monotonic() if now is None else now, system_error))

    def count(self, now: float) -> int:
        return sum(1 for at, error in self._outcomes if error and now - at <= self.horizon_s)

    @property
    def errors(self) -> int:
        return self.count(time.monotonic())


async def invokers_bucket(bus: JetStreamBus, bucket: str = INVOKERS_BUCKET) -> KeyValue:
    """The heartbeat bucket (provisioned with the topology; another name, as tests use, is made like it)."""
    if bucket == INVOKERS_BUCKET:
        return await bus.kv(bucket)  # read every second by the registry: no topology to build for it
    spec = topology(bus.settings).bucket(INVOKERS_BUCKET)
    return await bus.provision_bucket(msgspec.structs.replace(spec, name=bucket))


class HeartbeatPublisher:
    """`async with HeartbeatPublisher(bus, id, load)`: puts a heartbeat every second until the block ends,
    then one saying `stopping`, so the registry shows the invoker down at once."""

    def __init__(
        self,
        bus: JetStreamBus,
        invoker_id: str,
        load: Callable[[], Load],
        *,
        version: str = "",
        interval_s: float = HEARTBEAT_INTERVAL_S,
        bucket: str = INVOKERS_BUCKET,
    ) -> None:
        self.bus = bus
        self.invoker_id = invoker_id
        self.load = load
        self.version = version
        self.interval_s = interval_s
        self.bucket = bucket
        self.started = now_ms()
        self.beats = 0
        self._kv: KeyValue | None = None
        self._beating = Periodic(self._beat_now, interval_s, name=f"heartbeat-{invoker_id}")

    def beat(self, *, stopping: bool = False) -> Heartbeat:
        load = self.load()
        return Heartbeat(
            id=self.invoker_id,
            capacity_mb=load.capacity_mb,
            free_mb=load.free_mb,
            warm=load.warm,
            in_flight=load.in_flight,
            started=self.started,
            version=self.version,
            at=now_ms(),
            system_errors=load.system_errors,
            completed=load.completed,
            stopping=stopping,
            families=load.families,
        )

    async def __aenter__(self) -> HeartbeatPublisher:
        self._kv = await invokers_bucket(self.bus, self.bucket)
        await self._put(self.beat())  # visible before the first invocation is taken
        await self._beating.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._beating.__aexit__(exc_type, exc, tb)
        with contextlib.suppress(Exception):  # best effort: without it the invoker goes down after 10 s
            await self._put(self.beat(stopping=True))

    async def _beat_now(self) -> None:
        try:
            await self._put(self.beat())
        except Exception as exc:  # NATS away for a moment: the next beat will tell
            log.warning("heartbeat of %s not published: %s", self.invoker_id, exc)

    async def _put(self, beat: Heartbeat) -> None:
        assert self._kv is not None
        await self._kv.put(subjects.token(beat.id), codec.encode(beat))
        self.beats += 1


async def read_heartbeats(bus: JetStreamBus, bucket: str = INVOKERS_BUCKET) -> list[Heartbeat]:
    """Every heartbeat in the bucket (one per invoker), read in one consumer pass."""
    await invokers_bucket(bus, bucket)
    beats: list[Heartbeat] = []
    for msg in await bus.last_per_subject(f"KV_{bucket}", f"$KV.{bucket}.>"):
        if msg.data and not (msg.headers and "KV-Operation" in msg.headers):
            with contextlib.suppress(BadRequest):  # a foreign value is not an invoker
                beats.append(codec.decode(msg.data, Heartbeat))
    return beats


class InvokerRegistry:
    """The API's view of the invokers, refreshed in the background every second.

    A view that says nobody is up is re-read before a request is refused, so an invoker that just started
    is not refused for up to a second.
    """

    def __init__(
        self, bus: JetStreamBus, *, refresh_s: float = HEARTBEAT_INTERVAL_S, bucket: str = INVOKERS_BUCKET
    ) -> None:
        self.bus = bus
        self.refresh_s = refresh_s
        self.bucket = bucket
        self._beats: list[Heartbeat] = []
        self._read_at = 0.0  # monotonic
        self._lock = asyncio.Lock()
        self._refreshing = Periodic(self._refresh_now, refresh_s, name="invoker-registry", at_once=True)

    async def __aenter__(self) -> InvokerRegistry:
        await self._refreshing.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._refreshing.__aexit__(exc_type, exc, tb)

    async def _refresh_now(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("reading invoker heartbeats failed: %s", exc)

    async def refresh(self) -> list[Heartbeat]:
        asked = time.monotonic()
        async with self._lock:
            if self._read_at >= asked:  # a read that began after we asked finished while we queued
                return self._beats
            started = time.monotonic()
            self._beats = await read_heartbeats(self.bus, self.bucket)
            self._read_at = started
            return self._beats

    async def heartbeats(self, max_age_s: float | None = None) -> list[Heartbeat]:
        """The known heartbeats, re-read first if older than `max_age_s`."""
        if max_age_s is not None and time.monotonic() - self._read_at > max_age_s:
            return await self.refresh()
        return self._beats

    async def any_healthy(self, family: str | None = None) -> bool:
        """Whether an invoker is up (that runs `family`, when one is given)."""
        if healthy_count(self._beats, now_ms(), family):
            return True
        # Re-read: the view may predate an invoker that just started. Requests queued behind one read
        # share it, so a flood of refused requests costs one read at a time.
        return healthy_count(await self.refresh(), now_ms(), family) > 0
