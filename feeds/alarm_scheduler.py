"""The alarm scheduler of the feeds role: fires each owned alarm's instants through the one fire path.

Registrations come from a follow of the feeds bucket (its entries, then every change); each alarm belongs to
one live feeds process (feeds/membership.py). One task sleeps until the earliest instant of a heap, fires
what is due as the registration's subject, with the idempotency key of (feed, instant), and pushes the next
instant at once, so a slow or retried fire never delays the next tick. A process that becomes an alarm's
owner first fires what it may have missed (feeds/schedule.catch_up). Statuses are written every
`feeds_status_flush_s`, one write per alarm, not per fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from types import TracebackType
from typing import Any

import msgspec
from nats.aio.msg import Msg

from broker import codec, metrics, subjects
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.config import Settings
from broker.entities import TRIGGERS, split_path
from broker.entity_store import EntityStore, is_tombstone
from broker.errors import ConcurrentModification, NotFound, SquallError
from broker.feed_registry import AUTO, FeedReason, FeedRegistration, FeedRegistry, FeedStatus
from broker.firing import Fire, TriggerFiring
from broker.periodic import Periodic
from broker.rules import delete_rule
from feeds.alarms import PROVIDERS
from feeds.fire_rules import Disable, GiveUp, Retry, after_failure, http_status
from feeds.membership import Membership
from feeds.schedule import (
    MAX_TRIGGERS_MESSAGE,
    ONCE,
    Instants,
    Plan,
    catch_up,
    exhausted_message,
    plan_of,
)

log = logging.getLogger("squall.feeds.alarms")

IDLE_WAKE_S = 1.0


class Owned(msgspec.Struct, kw_only=True):
    """An alarm this process fires: its registration, plan and status as it knows them."""

    registration: FeedRegistration
    plan: Plan
    status: FeedStatus
    generation: int  # heap entries of an older generation are stale
    instants: Instants  # the plan's instants, read in order


def idempotency_key(registration: FeedRegistration, instant: int) -> str:
    """One per scheduled instant of one feed: every process firing it makes the same trigger activation."""
    return f"{registration.provider}@{registration.created}@{instant}"


class AlarmScheduler:
    """`async with AlarmScheduler(settings, bus, store, firing)`: fires the alarms this process owns until the
    block ends; then stops taking instants, lets fires in progress finish, writes the statuses and leaves the
    membership (its alarms go to the others at once)."""

    def __init__(
        self, settings: Settings, bus: JetStreamBus, store: EntityStore, firing: TriggerFiring
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.firing = firing
        self.registry = FeedRegistry(bus)
        self.membership = Membership(
            bus, timeout_s=settings.feeds_member_timeout_s, on_change=self._rebalance
        )
        self.registrations: dict[str, FeedRegistration] = {}
        self.owned: dict[str, Owned] = {}
        self.fires = 0  # accepted fires (for the bench and tests)
        self._heap: list[tuple[int, int, str, int]] = []  # (instant, seq, key, generation)
        self._seq = itertools.count()
        self._generations = itertools.count(1)
        self._wake = asyncio.Event()
        self._stopping = False
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Any = None
        self._loop: asyncio.Task[None] | None = None
        self._flushing = Periodic(self._flush, settings.feeds_status_flush_s, name="alarm-statuses")

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def __aenter__(self) -> AlarmScheduler:
        await self.membership.__aenter__()
        # Hear the other members before taking alarms: who owns what is decided on the whole live set.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.membership.ready.wait(), self.settings.feeds_member_timeout_s)
        self._sub = await self.bus.follow(
            f"KV_{subjects.FEEDS_BUCKET}", f"$KV.{subjects.FEEDS_BUCKET}.>", self._on_registration
        )
        self._loop = asyncio.create_task(self._run(), name="alarm-scheduler")
        await self._flushing.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        if self._loop is not None:
            await asyncio.wait({self._loop}, timeout=self.settings.drain_timeout_s)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        for task in self._tasks:
            task.cancel()
        await self._flushing.__aexit__(exc_type, exc, tb)
        await self._flush()
        await self.membership.__aexit__(exc_type, exc, tb)

    # -- registrations and ownership ------------------------------------------------------------------------

    async def _on_registration(self, msg: Msg) -> None:
        key = msg.subject.removeprefix(f"$KV.{subjects.FEEDS_BUCKET}.")
        if is_tombstone(msg.headers) or not msg.data:
            self.registrations.pop(key, None)
        else:
            try:
                registration = codec.decode(msg.data, FeedRegistration)
            except Exception:
                log.warning("feed registration %s is not readable; ignored", key)
                return
            if registration.provider not in PROVIDERS:
                return
            self.registrations[key] = registration
        self._reconsider(key)

    def _rebalance(self) -> None:
        for key in list(self.registrations.keys() | self.owned.keys()):
            self._reconsider(key)

    def _reconsider(self, key: str) -> None:
        """Take, keep, change or let go of one alarm after its registration or the live set changed."""
        if self._stopping:
            return
        registration = self.registrations.get(key)
        mine = registration is not None and registration.active and self.membership.owns(key)
        current = self.owned.get(key)
        if not mine:
            if current is not None:
                del self.owned[key]
                self._dirty.discard(key)
            return
        assert registration is not None
        if current is not None and current.registration == registration:
            return
        self._spawn(self._adopt(key, registration, current))

    async def _adopt(self, key: str, registration: FeedRegistration, current: Owned | None) -> None:
        """Start firing an alarm: first what was missed since it last fired (or was configured)."""
        try:
            plan = plan_of(registration.provider, registration.config, registration.trigger)
            if current is not None:
                status = current.status
            else:
                status = await self.registry.status(registration.namespace, registration.trigger)
        except Exception as exc:
            log.error("alarm %s cannot be scheduled: %s", key, exc)
            return
        if self.registrations.get(key) != registration or not self.membership.owns(key):
            return  # changed again meanwhile: the newer call decides
        generation = next(self._generations)
        owned = Owned(
            registration=registration,
            plan=plan,
            status=status,
            generation=generation,
            instants=Instants(plan),
        )
        self.owned[key] = owned
        now = now_ms()
        since = max(status.lastFire or 0, registration.updated, registration.created)
        due = catch_up(
            plan,
            since,
            now,
            int(self.settings.feeds_takeover_s * 1000),
            self.settings.feeds_missed_ticks,
        )
        following = owned.instants.after(max(now, due[-1] if due else now))
        for instant in due:
            self._spawn(self._fire(key, owned, instant, last=following is None and instant == due[-1]))
        if following is None:
            if not due:  # nothing left to fire at all
                self._spawn(self._disable(key, registration, None, exhausted_message(plan, fired=False)))
            return
        self._push(following, key, generation)
        owned.status = msgspec.structs.replace(owned.status, nextFire=following)
        self._dirty.add(key)

    # -- the timer --------------------------------------------------------------------------------------------

    def _push(self, instant: int, key: str, generation: int) -> None:
        first = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (instant, next(self._seq), key, generation))
        if first is None or instant < first:
            self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            now = now_ms()
            due: list[tuple[str, Owned, int, bool]] = []
            while self._heap and self._heap[0][0] <= now:
                instant, _, key, generation = heapq.heappop(self._heap)
                owned = self.owned.get(key)
                if owned is None or owned.generation != generation:
                    continue
                following = owned.instants.after(instant)
                if following is not None:
                    self._push(following, key, generation)
                owned.status = msgspec.structs.replace(owned.status, nextFire=following)
                due.append((key, owned, instant, following is None))
            if due:
                # One tick's fires go out together, pipelined: a thousand alarms on the same second are one
                # batch of publishes, not a thousand tasks each waiting for its acknowledgement.
                self._spawn(self._fire_due(due))
            delay = (self._heap[0][0] - now_ms()) / 1000 if self._heap else IDLE_WAKE_S
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, IDLE_WAKE_S))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- firing -----------------------------------------------------------------------------------------------

    async def _fire_due(self, due: list[tuple[str, Owned, int, bool]]) -> None:
        outcomes = await self.firing.fire_many(
            [self._request(owned, instant) for _, owned, instant, _ in due]
        )
        for (key, owned, instant, last), outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, Exception):
                # Retried on its own, by OpenWhisk's rules; the first attempt is the batch's.
                self._spawn(self._fire(key, owned, instant, last=last, failed=outcome))
            else:
                await self._fired(key, owned, instant, last)

    def _request(self, owned: Owned, instant: int) -> Fire:
        registration = owned.registration
        return Fire(
            namespace=registration.namespace,
            trigger=registration.trigger,
            subject=registration.subject,
            payload=registration.config.get("payload") or {},
            idempotency_key=idempotency_key(registration, instant),
        )

    async def _fire(
        self, key: str, owned: Owned, instant: int, *, last: bool = False, failed: Exception | None = None
    ) -> None:
        """Fire one instant (after a first attempt that `failed`, when given), retrying by OpenWhisk's rules."""
        registration = owned.registration
        request = self._request(owned, instant)
        attempt, throttled = 0, 0
        while True:
            attempt += 1
            try:
                if failed is not None:
                    raise failed
                await self.firing.fire(request)  # None (no active rule) is a success, as OpenWhisk's 204
                break
            except SquallError as exc:
                decision = after_failure(http_status(exc), exc.message, attempt, throttled)
            except Exception as exc:  # not one of ours: an outage of some kind, retried like a 5xx
                decision = after_failure(500, str(exc), attempt, throttled)
            failed = None
            if isinstance(decision, Retry):
                throttled = decision.throttled
                await asyncio.sleep(decision.delay_s)
                if self.owned.get(key) is not owned:
                    return  # deleted, changed or taken over meanwhile
                continue
            if isinstance(decision, Disable):
                await self._disable(key, registration, decision.status, decision.message)
            elif isinstance(decision, GiveUp):
                log.warning("alarm %s: %s", key, decision.message)
                self._note(key, owned, lastError=decision.message)
            return
        await self._fired(key, owned, instant, last)

    async def _fired(self, key: str, owned: Owned, instant: int, last: bool) -> None:
        """After an accepted fire: the status, and what a plan's end or a once alarm asks for."""
        registration = owned.registration
        self.fires += 1
        counters = metrics.current()
        counters.feed_fires("alarm").inc()
        counters.feed_fire_lag("alarm").observe(max(0, now_ms() - instant) / 1000)
        count = owned.status.fireCount + 1
        self._note(key, owned, lastFire=max(instant, owned.status.lastFire or 0), fireCount=count)
        plan = owned.plan
        if plan.kind == ONCE:
            await self._after_once(key, registration)
        elif last:
            await self._disable(key, registration, None, exhausted_message(plan, fired=True))
        elif plan.max_triggers > 0 and count >= plan.max_triggers:
            await self._disable(key, registration, None, MAX_TRIGGERS_MESSAGE)

    def _note(self, key: str, owned: Owned, **changes: Any) -> None:
        owned.status = msgspec.structs.replace(owned.status, **changes)
        self._dirty.add(key)

    async def _after_once(self, key: str, registration: FeedRegistration) -> None:
        """OpenWhisk's once alarm: disabled after its fire, or deleted with its trigger (and its rules)."""
        choice = str(registration.config.get("deleteAfterFire", "false"))
        if choice == "false":
            await self._disable(key, registration, None, exhausted_message(Plan(kind=ONCE), fired=True))
            return
        namespace, name = registration.namespace, registration.trigger
        try:
            if choice == "rules":
                trigger = (await self.store.get(TRIGGERS, namespace, name)).entity
                for rule_key in trigger.rules or {}:
                    rule_namespace, rule_name = split_path(rule_key)
                    with contextlib.suppress(NotFound):
                        await delete_rule(self.store, rule_namespace or namespace, rule_name)
            with contextlib.suppress(NotFound):
                await self.store.delete(TRIGGERS, namespace, name)
            await self.registry.delete(namespace, name)
        except SquallError as exc:
            log.error("alarm %s: deleting after its fire failed: %s", key, exc.message)

    async def _disable(
        self, key: str, registration: FeedRegistration, status: int | None, message: str
    ) -> None:
        """Mark the registration inactive with an AUTO reason (unless it changed since: then that wins)."""
        owned = self.owned.pop(key, None)
        if owned is not None:
            self._dirty.discard(key)
            final = msgspec.structs.replace(owned.status, nextFire=None)
            with contextlib.suppress(SquallError):
                await self.registry.put_status(registration.namespace, registration.trigger, final)
        for _ in range(3):
            try:
                current, revision = await self.registry.get(registration.namespace, registration.trigger)
                if current.created != registration.created or not current.active:
                    return
                reason = FeedReason(kind=AUTO, statusCode=status, message=message)
                disabled = msgspec.structs.replace(current, active=False, reason=reason, updated=now_ms())
                await self.registry.update(disabled, revision)
                log.info("alarm %s disabled: %s", key, message)
                return
            except NotFound:
                return
            except ConcurrentModification:
                continue
            except SquallError as exc:
                log.error("alarm %s could not be disabled: %s", key, exc.message)
                return

    # -- statuses ---------------------------------------------------------------------------------------------

    async def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        writes = []
        for key in dirty:
            owned = self.owned.get(key)
            if owned is None:
                continue
            registration = owned.registration
            writes.append(
                self.registry.put_status(registration.namespace, registration.trigger, owned.status)
            )
        for result in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("alarm statuses not all written: %s", result)
                break
