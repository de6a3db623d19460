"""The rule engine: turns each trigger event on TRIGGERS into one invocation per active rule, and the
trigger's activation record, exactly once in effect.

Per event, everything the engine publishes has an id derived from the event's own (broker/trigger_events):
the invocations' activation ids come from (trigger activation id, rule), the record's is the event's. The
event is acked only once JetStream has acknowledged all of them, so a crash means redelivery, and a
redelivery re-publishes the same ids, which JetStream's duplicate window drops (the record's unique index
in MongoDB catches what outlives the window).

Rules are read from the trigger's `rules` map (status, action, filter and retry policy, kept there by the
rules API) through an EntityCache, which KV writes invalidate as they happen: enabling, disabling or
changing a rule applies to the next event processed.

Each namespace's events wait in a queue of their own (broker/queues.py), read by every engine: a burst of one
namespace's fires is worked through beside another namespace's events, not in front of them. A rule's run is
never refused for its namespace's limits: it waits in the namespace's run queue for its concurrency and, past
its invocationsPerMinute, until the first minute with room (`not_before`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Final

import msgspec

from broker import codec, kinds, log_context, metrics, subjects, trace_context
from broker.action_refs import action_arguments, resolve_component
from broker.activations import INTERNAL_ERROR, SUCCESS, Activation, make_response
from broker.bus import JetStreamBus, Outgoing
from broker.clock import now_ms
from broker.config import Settings
from broker.entities import INITIAL_VERSION, TRIGGERS, ReducedRule, Trigger, storage_path
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, WrongCollection
from broker.event_matcher import EVENT_BUDGET, Budget, TooCostly, compile_pattern
from broker.event_patterns import matches
from broker.invocations import Invocation
from broker.queues import EventQueues, InvokeQueues, QueueFollower, subject_of
from broker.rule_links import active_rules
from broker.stream_worker import Delivery, StreamWorker, reason_of
from broker.topology import MAX_DELIVERIES
from broker.trigger_events import (
    TriggerEvent,
    event_arguments,
    filter_document,
    rule_activation_id,
    trigger_record,
)

log = logging.getLogger("squall.rules")

MAX_IN_FLIGHT: Final = 256  # events being processed at once
# An event up to this size holds at most a few thousand values (each takes two bytes of JSON at least): it is
# matched in one go, in a few milliseconds. A larger one is matched in slices (event_matcher.SLICE values), one
# large event at a time, letting the loop serve everything else between slices: otherwise a tenant's hostile
# filters and huge events would hold the loop that serves everyone (in standalone, the API's too) for a whole
# budget per event (~100 ms on a busy machine), and for that times the events in flight when they come in a batch.
INLINE_MATCH_BYTES: Final = 8 * 1024
# OpenWhisk's per-rule log codes: 0 invoked, 1 refused for the caller's reasons (4xx), 3 for the system's.
CODE_OK, CODE_CLIENT, CODE_SYSTEM = 0, 1, 3
GAVE_UP: Final = f"The trigger event could not be processed after {MAX_DELIVERIES} attempts:"
NOT_MATCHED: Final = "The event does not match the rule's filter; the action was not invoked."
TOO_COSTLY: Final = (
    "The rule's filter was not evaluated: matching it against this event would examine more than "
    f"{EVENT_BUDGET} values; the action was not invoked."
)

# When an event-driven run of a namespace may start: None for now, else an epoch ms (its invocationsPerMinute).
Schedule = Callable[[str], Awaitable[int | None]]


def rule_log(
    rule: str,
    action: str,
    *,
    code: int = CODE_OK,
    activation_id: str | None = None,
    error: str | None = None,
    skipped: str | None = None,
) -> str:
    """One line of a trigger record's `logs`: a JSON string per rule, in OpenWhisk's field order (`skipped`,
    Squall's, says why a rule invoked nothing without failing)."""
    line: dict[str, Any] = {"statusCode": code, "success": error is None}
    if activation_id is not None:
        line["activationId"] = activation_id
    line["rule"] = rule
    line["action"] = action
    if error is not None:
        line["error"] = error
    if skipped is not None:
        line["skipped"] = skipped
    return msgspec.json.encode(line).decode()


class Planned(msgspec.Struct, frozen=True):
    """What one rule makes of one event: its log line, and the invocation to publish (if any)."""

    line: str
    invocation: Outgoing | None = None
    skipped: bool = False  # by the rule's filter


class RuleEngine:
    """`async with RuleEngine(bus, store, settings):` processes trigger events until the block ends, then
    drains: no new events, those in progress finish under the drain deadline (the rest are redelivered)."""

    def __init__(
        self,
        bus: JetStreamBus,
        store: EntityStore,
        settings: Settings,
        *,
        schedule: Schedule | None = None,
        queues: InvokeQueues | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        # A rule's run is never refused for its namespace's limits: it waits in the namespace's queue (for its
        # concurrency) and, past its rate, until the minute `schedule` gives it.
        self.schedule = schedule
        self.queues = queues or InvokeQueues(bus, settings)
        self._cache = EntityCache(bus, store)
        self._worker: StreamWorker[TriggerEvent] = StreamWorker(
            bus,
            None,  # each namespace's event queue, followed as they appear
            msgspec.json.Decoder(TriggerEvent).decode,
            handle=self._handle,
            give_up=self._give_up,
            max_in_flight=MAX_IN_FLIGHT,
            drain_timeout_s=settings.drain_timeout_s,
            name="rule-engine",
        )
        self._following = QueueFollower(EventQueues(bus, settings), self._worker, name="event-queues")
        self._matching = asyncio.Lock()  # held by the one large event being matched
        counters = metrics.current()
        self._invoked = counters.rule_runs("invoked")
        self._failed = counters.rule_runs("failed")
        self._filtered = counters.rule_filter_skips()

    @property
    def processed(self) -> int:
        """Events done: their invocations and record published, the event acknowledged."""
        return self._worker.handled

    async def __aenter__(self) -> RuleEngine:
        await self._cache.__aenter__()
        try:
            await self._worker.__aenter__()
            await self._following.__aenter__()
        except BaseException:
            await self._worker.__aexit__(None, None, None)
            await self._cache.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._following.__aexit__(None, None, None)
        await self._worker.__aexit__(exc_type, exc, tb)
        await self._cache.__aexit__(None, None, None)

    async def _handle(self, delivery: Delivery[TriggerEvent]) -> None:
        event = delivery.value
        with log_context.working_on(event.namespace, event.activationId, event.traceparent):
            await self.bus.publish_many(await self.plan(event, size=len(delivery.msg.data)))

    async def _give_up(self, delivery: Delivery[TriggerEvent], exc: Exception) -> None:
        """Record the failure on the trigger's activation, so that an event that cannot be processed neither
        loops forever nor vanishes unseen."""
        event = delivery.value
        reason = reason_of(exc)
        log.error(
            "trigger event %s failed %d times (%s); recorded as failed",
            event.activationId,
            MAX_DELIVERIES,
            reason,
        )
        failure = make_response(INTERNAL_ERROR, {"error": f"{GAVE_UP} {reason}"})
        await self.bus.publish_many(
            [self._record_message(trigger_record(event, INITIAL_VERSION, [], failure))]
        )

    # -- deciding -----------------------------------------------------------------------------------------

    async def plan(self, event: TriggerEvent, size: int | None = None) -> list[Outgoing]:
        """Everything one event produces: the rules' invocations, then the trigger record. `size` is the
        event's encoded size: unknown, it is matched off the loop like a large one."""
        trigger = await self._trigger(event)
        lines: list[str] = []
        outgoing: list[Outgoing] = []
        if trigger is not None:
            rules = active_rules(trigger)
            filters = {k: r.filter for k, r in rules.items() if isinstance(r.filter, dict)}
            verdicts: dict[str, str | None] = {}
            if filters:
                document = filter_document(event.payload, event.cloudevent)
                if size is not None and size <= INLINE_MATCH_BYTES:
                    verdicts = judge(filters, document)
                else:
                    async with self._matching:
                        verdicts = await judge_in_slices(filters, document)
            planned = await asyncio.gather(
                *(self._plan_rule(event, k, r, verdicts.get(k)) for k, r in rules.items())
            )
            for item in planned:
                lines.append(item.line)
                if item.invocation is not None:
                    outgoing.append(item.invocation)
                    self._invoked.inc()
                elif item.skipped:
                    self._filtered.inc()
                else:
                    self._failed.inc()
            if outgoing:
                await self.queues.ensure(event.namespace)
        record = trigger_record(event, trigger.version if trigger is not None else INITIAL_VERSION, lines)
        outgoing.append(self._record_message(record))
        return outgoing

    def _record_message(self, record: Activation) -> Outgoing:
        """The record as a message; a payload too large to travel with its log lines is left out of it (its
        size noted), since the fire itself was accepted."""
        payload = self.bus.encode(record, shrink=without_payload)
        subject = subjects.activation_subject(record.namespace, record.name)
        return Outgoing(subject=subject, payload=payload, msg_id=record.activationId)

    async def _trigger(self, event: TriggerEvent) -> Trigger | None:
        try:
            return (await self._cache.get(TRIGGERS, event.namespace, event.trigger)).entity
        except (NotFound, WrongCollection):
            return None  # deleted since the fire: the record says it ran no rule

    async def _plan_rule(
        self, event: TriggerEvent, key: str, rule: ReducedRule, skipped: str | None
    ) -> Planned:
        action_ref = f"{rule.action.path}/{rule.action.name}"
        if skipped is not None:
            return Planned(rule_log(key, action_ref, skipped=skipped), skipped=True)
        try:
            resolved = await resolve_component(self._cache, "/" + action_ref, event.namespace)
        except (NotFound, WrongCollection):
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=NotFound().message))
        except Forbidden as exc:  # no longer published to the rule's namespace, or never was (a stale rule)
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=exc.message))
        try:
            kinds.check_invocable(resolved.action.exec.kind)
            arguments = action_arguments(resolved.action, resolved.parameters, event_arguments(event))
        except BadRequest as exc:
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=exc.message))
        not_before = await self.schedule(event.namespace) if self.schedule is not None else None
        owner, path = storage_path(resolved.action)
        activation_id = rule_activation_id(event.activationId, key)
        invocation = Invocation(
            activationId=activation_id,
            namespace=event.namespace,
            action=f"{owner}/{path}",
            params=arguments,
            subject=event.subject,
            transaction_id=event.transaction_id,
            cause=event.activationId,
            binding=resolved.binding,
            hops=event.hops,
            published=now_ms(),
            rule=key,
            trigger=f"{event.namespace}/{event.trigger}",
            retry=rule.retry if not isinstance(rule.retry, msgspec.UnsetType) else None,
            not_before=not_before,
            traceparent=trace_context.child(event.traceparent),
        )
        try:
            payload = self.bus.encode(invocation)
        except PayloadTooLarge as exc:  # the action's own parameters can tip it over
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=exc.message))
        message = Outgoing(subject=subject_of(invocation), payload=payload, msg_id=activation_id)
        return Planned(rule_log(key, action_ref, activation_id=activation_id), message)


def judge(filters: Mapping[str, dict[str, Any]], document: dict[str, Any]) -> dict[str, str | None]:
    """Each filtered rule's verdict on one event, in order: None to run it, else why it is skipped. The rules
    share one budget, so one event's filtering has a bounded cost however many rules its trigger has."""
    budget = Budget()
    verdicts: dict[str, str | None] = {}
    for key, pattern in filters.items():
        try:
            verdicts[key] = None if matches(pattern, document, budget) else NOT_MATCHED
        except TooCostly:
            verdicts[key] = TOO_COSTLY
    return verdicts


async def judge_in_slices(
    filters: Mapping[str, dict[str, Any]], document: dict[str, Any]
) -> dict[str, str | None]:
    """`judge`, yielding to the loop between slices of the matching."""
    budget = Budget()
    verdicts: dict[str, str | None] = {}
    for key, pattern in filters.items():
        steps = compile_pattern(pattern).steps(document, budget)
        try:
            while True:
                next(steps)
                await asyncio.sleep(0)
        except StopIteration as done:
            verdicts[key] = None if done.value else NOT_MATCHED
        except TooCostly:
            verdicts[key] = TOO_COSTLY
    return verdicts


def without_payload(record: Activation, _max_bytes: int) -> Activation:
    """A trigger record whose payload (its result) cannot travel with its rule lines: the size is kept."""
    size = len(codec.encode(record.response.result))
    return msgspec.structs.replace(record, response=make_response(SUCCESS, {}, size=size))
