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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import msgspec
import nats.js.errors
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api

from broker import codec, kinds, subjects
from broker.action_refs import action_arguments, resolve_component
from broker.activations import INTERNAL_ERROR, SUCCESS, Activation, make_response
from broker.bus import JetStreamBus, Outgoing, translate
from broker.config import Settings
from broker.entities import INITIAL_VERSION, TRIGGERS, ReducedRule, Trigger, storage_path
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.errors import BadRequest, NotFound, SquallError, WrongCollection
from broker.event_patterns import matches
from broker.health import now_ms
from broker.invocations import Invocation
from broker.limits import too_large_message
from broker.rule_links import active_rules
from broker.trigger_events import (
    TriggerEvent,
    event_arguments,
    filter_document,
    loop_message,
    rule_activation_id,
    trigger_record,
)

log = logging.getLogger("squall.rules")

DURABLE: Final = "rule-engine"
MAX_IN_FLIGHT: Final = 256  # events being processed at once
FETCH_TIMEOUT_S: Final = 0.5
# OpenWhisk's per-rule log codes: 0 invoked, 1 refused for the caller's reasons (4xx), 3 for the system's.
CODE_OK, CODE_CLIENT, CODE_SYSTEM = 0, 1, 3
# Deliveries of one event before its failure is recorded instead of tried again.
MAX_DELIVERIES: Final = 5
GAVE_UP: Final = f"The trigger event could not be processed after {MAX_DELIVERIES} attempts:"
NOT_MATCHED: Final = "The event does not match the rule's filter; the action was not invoked."

Admit = Callable[[str], Awaitable[str | None]]


def consumer_config(ack_wait_s: float) -> api.ConsumerConfig:
    """The engine's durable consumer. New events only on first creation: the stream is also the event
    history, which a new engine must not replay. Provisioning creates it before any role serves, so no
    fire can precede it."""
    return api.ConsumerConfig(
        name=DURABLE,
        durable_name=DURABLE,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.NEW,
        ack_wait=ack_wait_s,
        max_ack_pending=MAX_IN_FLIGHT * 8,
    )


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


class RuleEngine:
    """`async with RuleEngine(bus, store, settings):` processes trigger events until the block ends, then
    drains: no new events, those in progress finish under the drain deadline (the rest are redelivered)."""

    def __init__(
        self, bus: JetStreamBus, store: EntityStore, settings: Settings, *, admit: Admit | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.admit = admit  # the invocation throttle: None, or the 429 message a rule's run gets
        self.processed = 0
        self._cache = EntityCache(bus, store)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._sub: Any = None

    async def __aenter__(self) -> RuleEngine:
        await ensure_consumer(self.bus, self.settings)
        await self._cache.__aenter__()
        try:
            self._sub = await self.bus.js.pull_subscribe_bind(DURABLE, subjects.TRIGGERS_STREAM)
        except Exception as exc:
            await self._cache.__aexit__(None, None, None)
            raise translate(exc, "binding the rule engine's consumer") from None
        self._loop = asyncio.create_task(self._run(), name="rule-engine")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        if self._loop is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
            for task in late:  # their events were not acked: JetStream redelivers them
                task.cancel()
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        await self._cache.__aexit__(None, None, None)

    # -- the loop ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            free = MAX_IN_FLIGHT - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await self._sub.fetch(free, timeout=FETCH_TIMEOUT_S)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as exc:
                # The loop outlives any one failure (e.g. NATS restarting): unacked events come back.
                log.warning("fetching trigger events failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Any) -> None:
        try:
            event = codec.decode(msg.data, TriggerEvent)
        except SquallError:
            log.error("dropping an unreadable trigger event (stream seq %s)", msg.metadata.sequence.stream)
            with contextlib.suppress(Exception):
                await msg.term()
            return
        try:
            await self.bus.publish_many(await self.plan(event))
            await msg.ack()
            self.processed += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(msg, event, exc)

    async def _failed(self, msg: Any, event: TriggerEvent, exc: Exception) -> None:
        """Try again later; after MAX_DELIVERIES, record the failure on the trigger's activation and let the
        event go, so that one event that cannot be processed neither loops forever nor vanishes unseen."""
        reason = exc.message if isinstance(exc, SquallError) else str(exc) or type(exc).__name__
        if msg.metadata.num_delivered < MAX_DELIVERIES:
            log.warning(
                "trigger event %s not processed (%s); it will be delivered again", event.activationId, reason
            )
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)
            return
        log.error(
            "trigger event %s failed %d times (%s); recorded as failed",
            event.activationId,
            MAX_DELIVERIES,
            reason,
        )
        failure = make_response(INTERNAL_ERROR, {"error": f"{GAVE_UP} {reason}"})
        record = trigger_record(event, INITIAL_VERSION, [], failure)
        try:
            await self.bus.publish_many([self._record_message(record)])
            await msg.ack()
        except Exception:
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)

    # -- deciding -----------------------------------------------------------------------------------------

    async def plan(self, event: TriggerEvent) -> list[Outgoing]:
        """Everything one event produces: the rules' invocations, then the trigger record."""
        trigger = await self._trigger(event)
        lines: list[str] = []
        outgoing: list[Outgoing] = []
        if event.hops > self.settings.max_hops:
            refused = loop_message(event.hops, self.settings.max_hops)
            lines.append(rule_log("*", "*", code=CODE_CLIENT, error=refused))
        elif trigger is not None:
            document = filter_document(event.payload, event.cloudevent)
            rules = active_rules(trigger)
            planned = await asyncio.gather(
                *(self._plan_rule(event, k, r, document) for k, r in rules.items())
            )
            for item in planned:
                lines.append(item.line)
                if item.invocation is not None:
                    outgoing.append(item.invocation)
        record = trigger_record(event, trigger.version if trigger is not None else INITIAL_VERSION, lines)
        outgoing.append(self._record_message(record))
        return outgoing

    def _record_message(self, record: Activation) -> Outgoing:
        """The record as a message; a payload too large to travel with its log lines is left out of it
        (its size noted), since the fire itself was accepted."""
        payload = codec.encode(record)
        if len(payload) > self.bus.nc.max_payload:
            size = len(codec.encode(record.response.result))
            record = msgspec.structs.replace(record, response=make_response(SUCCESS, {}, size=size))
            payload = codec.encode(record)
        subject = subjects.activation_subject(record.namespace, record.name)
        return Outgoing(subject=subject, payload=payload, msg_id=record.activationId)

    async def _trigger(self, event: TriggerEvent) -> Trigger | None:
        try:
            return (await self._cache.get(TRIGGERS, event.namespace, event.trigger)).entity
        except (NotFound, WrongCollection):
            return None  # deleted since the fire: the record says it ran no rule

    async def _plan_rule(
        self, event: TriggerEvent, key: str, rule: ReducedRule, document: dict[str, Any]
    ) -> Planned:
        action_ref = f"{rule.action.path}/{rule.action.name}"
        if isinstance(rule.filter, dict) and not matches(rule.filter, document):
            return Planned(rule_log(key, action_ref, skipped=NOT_MATCHED))
        try:
            resolved = await resolve_component(self._cache, "/" + action_ref, event.namespace)
        except (NotFound, WrongCollection):
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=NotFound().message))
        try:
            kinds.check_invocable(resolved.action.exec.kind)
            arguments = action_arguments(resolved.action, resolved.parameters, event_arguments(event))
        except BadRequest as exc:
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=exc.message))
        if self.admit is not None:
            refusal = await self.admit(event.namespace)
            if refusal is not None:
                return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=refusal))
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
        )
        payload = codec.encode(invocation)
        if len(payload) > self.bus.nc.max_payload:  # the action's own parameters can tip it over
            too_large = too_large_message(len(payload), self.bus.nc.max_payload)
            return Planned(rule_log(key, action_ref, code=CODE_CLIENT, error=too_large))
        message = Outgoing(
            subject=subjects.invoke_subject(owner, path), payload=payload, msg_id=activation_id
        )
        return Planned(rule_log(key, action_ref, activation_id=activation_id), message)


async def ensure_consumer(bus: JetStreamBus, settings: Settings) -> None:
    """Create the engine's durable consumer, or leave the existing one (and its position) as it is."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await bus.js.consumer_info(subjects.TRIGGERS_STREAM, DURABLE)
        return
    try:
        await bus.js.add_consumer(subjects.TRIGGERS_STREAM, consumer_config(settings.broker_ack_wait_s))
    except Exception as exc:
        raise translate(exc, "creating the rule engine's consumer") from None
