"""The trigger event: what a fire puts on the TRIGGERS stream for the rule engine, and the ids derived from it.

Every id downstream of a fire is a pure function of what came before it, so that a retried fire, a
redelivered event or a restarted engine produces the same ids, and JetStream's duplicate window (msg id =
activation id) and MongoDB's unique index turn the repeat into nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from broker import trace_context
from broker.activations import SUCCESS, Activation, ActivationResponse, make_response
from broker.entities import KeyValue

# The header a client sends to make a fire idempotent (as in Stripe's and the IETF draft's APIs).
IDEMPOTENCY_HEADER: Final = "idempotency-key"
# The hop count of an event caused by an action (loop protection); also read as the CloudEvent
# extension attribute `squallhops`.
HOPS_HEADER: Final = "squall-hops"
HOPS_EXTENSION: Final = "squallhops"


class TriggerEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One accepted fire of one trigger. `activationId` is also its JetStream msg id."""

    activationId: str  # the trigger activation's id
    namespace: str  # the trigger's namespace
    trigger: str  # the trigger's name
    subject: str  # the caller's key uuid (the activation's `subject`)
    payload: dict[str, Any] = {}  # what the caller sent: the trigger record's result
    parameters: dict[str, Any] = {}  # the trigger's parameters when it was fired
    headers: dict[str, str] = {}  # the fire request's headers, lowercased, without credentials
    cloudevent: dict[str, Any] | None = None  # CloudEvent context attributes, when the fire was one
    hops: int = 0  # how many action-caused events led to this one
    published: int = 0  # epoch ms when the API accepted it: the trigger record's `start`
    transaction_id: str = ""  # the fire request's X-Request-ID
    traceparent: str = ""  # W3C trace context of this event (broker/trace_context.py); "" with tracing off


def loop_message(hops: int, allowed: int) -> str:
    """Why an event past the hop limit is refused (at the API, and by the engine for other producers)."""
    return (
        f"The event has passed through {hops} hops, more than the {allowed} allowed: "
        "refused to break a possible trigger loop."
    )


def event_arguments(event: TriggerEvent) -> dict[str, Any]:
    """What a rule's action gets from the event: trigger parameters < payload, plus `__ow_headers` (#5273)
    and, for a CloudEvent, its attributes as `__ow_cloudevent`. Computed here rather than carried, so an
    event holds its payload once."""
    arguments = {**event.parameters, **event.payload, "__ow_headers": event.headers}
    if event.cloudevent is not None:
        arguments["__ow_cloudevent"] = event.cloudevent
    return arguments


def filter_document(payload: Mapping[str, Any], attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a rule's filter is matched against: the event in CloudEvents' structured form, with the payload
    as `data` (a plain fire is an event with `data` alone)."""
    return {**(attributes or {}), "data": dict(payload)}


def _derive(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:32]  # the shape of an OpenWhisk activation id: 32 lowercase hex digits


def fire_id(namespace: str, trigger: str, idempotency_key: str) -> str:
    """The activation id of a fire that carries an idempotency key (or a CloudEvent id)."""
    return _derive("fire", namespace, trigger, idempotency_key)


def rule_activation_id(trigger_activation_id: str, rule: str) -> str:
    """The activation id of the run a rule (`ns/rule`) makes for one trigger activation."""
    return _derive("rule", trigger_activation_id, rule)


def attempt_activation_id(first_id: str, attempt: int) -> str:
    """The activation id of retry `attempt` (2, 3, …) of a run whose first attempt had `first_id`."""
    return first_id if attempt <= 1 else _derive("attempt", first_id, str(attempt))


def trigger_record(
    event: TriggerEvent, version: str, logs: list[str], response: ActivationResponse | None = None
) -> Activation:
    """The trigger activation as OpenWhisk writes it: the payload as result (unless the fire was refused),
    `start` when it was accepted, no `end`, one log line per rule."""
    return Activation(
        namespace=event.namespace,
        name=event.trigger,
        subject=event.subject,
        activationId=event.activationId,
        start=event.published,
        response=response or make_response(SUCCESS, event.payload),
        logs=logs,
        version=version,
        publish=False,
        annotations=trace_context.annotated(
            event.traceparent, [KeyValue(key="hops", value=event.hops)] if event.hops else []
        ),
    )
