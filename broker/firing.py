"""Firing a trigger: the one path every fire takes (HTTP, alarms, webhooks, NATS feeds) onto TRIGGERS.

OpenWhisk's answers (Triggers.scala): NotFound for an unknown trigger, nothing (the API's 204, no record) when no
rule is active, else the trigger activation's id as soon as the event is durably in JetStream. An idempotency key
fixes the activation id and the JetStream msg id, so a repeated fire inside the duplicate window answers the first
fire's id and creates nothing; feeds use it for an alarm's instant and a webhook's delivery id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from broker import codec, metrics, params, subjects, trace_context
from broker.activations import APPLICATION_ERROR, make_response, new_activation_id
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.entities import TRIGGERS
from broker.entity_cache import EntityCache
from broker.errors import BadRequest
from broker.queues import EventQueues
from broker.rule_links import active_rules
from broker.trigger_events import TriggerEvent, fire_id, loop_message, trigger_record


class FireCheck(Protocol):
    """The namespace throttle a fire passes (broker.throttles.Throttles)."""

    async def check_fire(self, namespace: str) -> None: ...


class Fire(msgspec.Struct, frozen=True, kw_only=True):
    """One request to fire `namespace`'s `trigger`, by the key `subject` (a uuid), from any producer."""

    namespace: str
    trigger: str
    subject: str
    payload: dict[str, Any] = {}
    idempotency_key: str | None = None
    headers: dict[str, str] = {}  # what the rule's actions get as `__ow_headers`
    cloudevent: dict[str, Any] | None = None
    hops: int = 0
    transaction_id: str = ""
    traceparent: str = ""  # the producer's trace context; the event carries a child of it


class TriggerFiring:
    """`await firing.fire(Fire(...))`: the trigger activation's id, or None when no rule is active."""

    def __init__(
        self,
        bus: JetStreamBus,
        entities: EntityCache,
        events: EventQueues,
        throttles: FireCheck,
        *,
        max_hops: int,
        tracing: bool = True,
    ) -> None:
        self.bus = bus
        self.entities = entities
        self.events = events
        self.throttles = throttles
        self.max_hops = max_hops
        self.tracing = tracing
        self._metrics = metrics.current()

    async def fire(self, request: Fire) -> str | None:
        """Throttled (429) past firesPerMinute, NotFound for an unknown trigger, BadRequest past the hop limit
        (recorded as a refused trigger activation), PayloadTooLarge when parameters and payload pass a message."""
        try:
            event = await self._event(request)
            if event is not None:
                await self.events.publish(event)  # trigger parameters can make it too large (413)
        except Exception as exc:
            self._refused(request, exc)
            raise
        self._counted(request, event)
        return None if event is None else event.activationId

    async def fire_many(self, requests: Sequence[Fire]) -> list[str | Exception | None]:
        """Each request's outcome as `fire` would answer it (the error instead of raising it), with the events
        published pipelined rather than one acknowledgement at a time: an alarm tick's fires."""
        outcomes: list[str | Exception | None] = []
        events: list[TriggerEvent] = []
        for request in requests:
            try:
                event = await self._event(request)
            except Exception as exc:
                outcomes.append(exc)
                continue
            outcomes.append(None if event is None else event.activationId)
            if event is not None:
                events.append(event)
        failures = iter(await self.events.publish_many(events))
        answers = [
            (next(failures) or outcome) if isinstance(outcome, str) else outcome for outcome in outcomes
        ]
        for request, answer in zip(requests, answers, strict=True):
            if isinstance(answer, Exception):
                self._refused(request, answer)
            else:
                self._counted(request, answer)
        return answers

    def _counted(self, request: Fire, event: object) -> None:
        if event is None:
            self._metrics.fires_refused("no_rule", namespace=request.namespace).inc()
        else:
            self._metrics.fires_accepted(namespace=request.namespace).inc()

    def _refused(self, request: Fire, exc: BaseException) -> None:
        self._metrics.fires_refused(metrics.refusal_reason(exc), namespace=request.namespace).inc()

    async def _event(self, request: Fire) -> TriggerEvent | None:
        """The event a fire stores, None when no rule is active; refusals raise (see `fire`)."""
        namespace, name = request.namespace, request.trigger
        await self.throttles.check_fire(namespace)
        trigger = (await self.entities.get(TRIGGERS, namespace, name)).entity
        if not active_rules(trigger):
            return None
        key = request.idempotency_key
        activation_id = fire_id(namespace, name, key) if key is not None else new_activation_id()
        event = TriggerEvent(
            activationId=activation_id,
            namespace=namespace,
            trigger=name,
            subject=request.subject,
            payload=request.payload,
            parameters=params.as_arguments(trigger.parameters),
            headers=request.headers,
            cloudevent=request.cloudevent,
            hops=request.hops,
            published=now_ms(),
            transaction_id=request.transaction_id,
            traceparent=trace_of(request.traceparent, self.tracing),
        )
        if request.hops > self.max_hops:
            message = loop_message(request.hops, self.max_hops)
            record = trigger_record(
                event, trigger.version, [], make_response(APPLICATION_ERROR, {"error": message})
            )
            await self.bus.publish(
                subjects.activation_subject(namespace, name), codec.encode(record), msg_id=activation_id
            )
            raise BadRequest(message)
        return event


def trace_of(traceparent: str, tracing: bool) -> str:
    """The event's trace context: a child of its producer's, a new trace when it had none (an alarm), none
    with tracing off."""
    if not tracing:
        return ""
    return trace_context.child(traceparent) if traceparent else trace_context.start()
