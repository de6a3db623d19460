"""Sequences, run inside the invoker that took them: components in order, each result the next one's input.

Design: the invoker that pulls a sequence invocation runs its components itself, through its own pool, one
after the other, and publishes each component's record as it completes. It does not put component
invocations back on the INVOKE stream: a sequence waiting for components that wait for a free invoker
could deadlock a busy cluster, and every hop would add latency. Component activation ids are derived from
the sequence's id and the component's position, so a sequence redelivered after an invoker crash
re-publishes the same ids (JetStream and the MongoDB unique index drop the duplicates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

from broker import params, trace_context
from broker.action_refs import Reader, ResolvedAction, resolve_component
from broker.activations import APPLICATION_ERROR, Activation, ActivationResponse, annotation, make_response
from broker.clock import now_ms
from broker.entities import Action, ActionLimits, KeyValue
from broker.errors import Forbidden, NotFound, WrongCollection
from broker.invocations import Invocation
from broker.kinds import SEQUENCE
from broker.limits import SEQUENCE_MAX_LENGTH
from runtimes import activation_result as results

# OpenWhisk's words (Messages.sequenceIsTooLong / sequenceComponentNotFound).
SEQUENCE_TOO_LONG: Final = "Too many actions in the sequence."
COMPONENT_NOT_FOUND: Final = "Sequence component does not exist."


Execute = Callable[[Invocation, ResolvedAction, Any, bool], Awaitable[Activation]]
Publish = Callable[[Activation], Awaitable[None]]


def component_id(sequence_id: str, index: int) -> str:
    """A component's activation id: derived, so a redelivered sequence reuses it (32 lowercase hex)."""
    return hashlib.sha256(f"{sequence_id}/{index}".encode()).hexdigest()[:32]


def component_arguments(resolved: ResolvedAction, payload: Any) -> Any:
    """What a component receives: its bound parameters under the previous result. An array result (OpenWhisk
    ≥ 2022) is passed on as it is, since it has no keys to merge."""
    if not isinstance(payload, dict):
        return payload
    return params.as_arguments(params.merge(resolved.parameters, resolved.action.parameters), payload)


def sequence_record(
    *,
    invocation: Invocation,
    sequence: Action,
    response: ActivationResponse,
    component_ids: list[str],
    duration: int,
    max_memory: int | None,
    topmost: bool,
    start: int,
    end: int,
) -> Activation:
    """The sequence's own record, as OpenWhisk's controller makes it (`makeSequenceActivation`)."""
    annotations = [
        KeyValue(key="topmost", value=topmost),
        KeyValue(key="path", value=results.action_path(sequence)),
        KeyValue(key="kind", value=SEQUENCE),
    ]
    if not topmost:
        annotations.append(KeyValue(key="causedBy", value=SEQUENCE))
    if max_memory is not None:
        limits = ActionLimits(timeout=sequence.limits.timeout, memory=max_memory, logs=sequence.limits.logs)
        annotations.append(KeyValue(key="limits", value=results.limits_value(limits)))
    trace_context.annotated(invocation.traceparent, annotations)
    return Activation(
        namespace=invocation.namespace,
        name=sequence.name,
        subject=invocation.subject,
        activationId=invocation.activationId,
        start=start,
        end=end,
        duration=duration,
        cause=invocation.cause,
        response=response,
        logs=component_ids,
        version=sequence.version,
        publish=False,
        annotations=annotations,
    )


def memory_of(record: Activation) -> int | None:
    limits = annotation(record, "limits")
    memory = limits.get("memory") if isinstance(limits, dict) else None
    return memory if isinstance(memory, int) else None


class SequenceRunner:
    """Runs sequences with the invoker's `execute` (one code action) and `publish` (one record)."""

    def __init__(self, store: Reader, execute: Execute, publish: Publish) -> None:
        self.store = store
        self.execute = execute
        self.publish = publish

    async def run(self, invocation: Invocation, sequence: Action) -> Activation:
        """The topmost sequence's record; component records are published on the way."""
        record, _ = await self._run(invocation, sequence, invocation.params, topmost=True, atomic=0)
        return record

    async def _run(
        self, invocation: Invocation, sequence: Action, payload: Any, *, topmost: bool, atomic: int
    ) -> tuple[Activation, int]:
        start = now_ms()
        # OpenWhisk starts from a placeholder holding the input: what a sequence without components answers.
        response = make_response(APPLICATION_ERROR, payload)
        ids: list[str] = []
        duration = 0
        max_memory: int | None = None
        for index, ref in enumerate(sequence.exec.components or []):
            try:
                resolved = await resolve_component(self.store, ref, invocation.namespace)
            except (NotFound, WrongCollection):
                response = results.error_response(APPLICATION_ERROR, COMPONENT_NOT_FOUND)
                break
            except Forbidden as exc:  # checked as it runs: a package unpublished since the sequence was made
                response = results.error_response(APPLICATION_ERROR, exc.message)
                break
            child = Invocation(
                activationId=component_id(invocation.activationId, index),
                namespace=invocation.namespace,
                action=f"{resolved.action.namespace}/{resolved.action.name}",
                subject=invocation.subject,
                sealed_api_key=invocation.sealed_api_key,
                transaction_id=invocation.transaction_id,
                cause=invocation.activationId,
                binding=resolved.binding,
                published=now_ms(),
                traceparent=trace_context.child(invocation.traceparent),
            )
            if resolved.action.exec.kind == SEQUENCE:
                record, atomic = await self._run(
                    child, resolved.action, payload, topmost=False, atomic=atomic
                )
            elif atomic >= SEQUENCE_MAX_LENGTH:
                response = results.error_response(APPLICATION_ERROR, SEQUENCE_TOO_LONG)
                break
            else:
                atomic += 1
                record = await self.execute(child, resolved, component_arguments(resolved, payload), True)
            await self.publish(record)
            ids.append(record.activationId)
            duration += record.duration or 0
            memory = memory_of(record)
            if memory is not None:
                max_memory = max(memory, max_memory or memory)
            response = record.response
            if results.has_error(response):
                break
            payload = response.result
        record = sequence_record(
            invocation=invocation,
            sequence=sequence,
            response=response,
            component_ids=ids,
            duration=duration,
            max_memory=max_memory,
            topmost=topmost,
            start=start,
            end=now_ms(),
        )
        return record, atomic
