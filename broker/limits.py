"""System limits (OpenWhisk's defaults) and the pure checks of action limits and entity sizes against them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from broker.entities import ActionLimits, KeyValue
from broker.errors import BadRequest, PayloadTooLarge
from broker.namespaces import NamespaceLimits

if TYPE_CHECKING:
    from broker.config import Settings

MB = 1024 * 1024

# Action limits: (min, max); defaults live on `ActionLimits`. Units: ms, MB, MB, activations.
TIMEOUT_MS = (100, 300_000)
MEMORY_MB = (128, 512)
LOGS_MB = (0, 10)
CONCURRENCY = (1, 1)  # intra-container concurrency is off in OpenWhisk's default deployment

# Sizes, in bytes, as OpenWhisk measures them (UTF-8 of code; key + compact JSON of each parameter).
PARAMETERS_MAX_BYTES = 1 * MB
CODE_MAX_BYTES = 48 * MB
PAYLOAD_MAX_BYTES = 1 * MB
RESULT_MAX_BYTES = 1 * MB

SEQUENCE_MAX_LENGTH = 50
# How deep a payload or a result may nest: records are stored in MongoDB, which refuses documents nested more than
# 100 levels, and a record holds a result two levels down (`response.result`).
NESTING_MAX_DEPTH = 90

# Per-namespace throttles when the namespace record does not override them (ansible/standalone values).
# These are the defaults of the settings that a deployment may change (SQUALL_INVOCATIONS_PER_MINUTE, …).
INVOCATIONS_PER_MINUTE = 60
CONCURRENT_INVOCATIONS = 30
FIRES_PER_MINUTE = 60
# Squall's storage quotas (OpenWhisk has none): the defaults of SQUALL_ENTITIES_PER_NAMESPACE and
# SQUALL_DEADLETTERS_PER_NAMESPACE.
ENTITIES_PER_NAMESPACE = 1000
DEADLETTERS_PER_NAMESPACE = 1000


class NamespaceDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """The system values of the per-namespace throttles: what a namespace gets when its record is silent."""

    invocationsPerMinute: int = INVOCATIONS_PER_MINUTE
    concurrentInvocations: int = CONCURRENT_INVOCATIONS
    firesPerMinute: int = FIRES_PER_MINUTE
    maxEntities: int = ENTITIES_PER_NAMESPACE
    maxDeadLetters: int = DEADLETTERS_PER_NAMESPACE


OPENWHISK_DEFAULTS = NamespaceDefaults()


def namespace_defaults(settings: Settings) -> NamespaceDefaults:
    return NamespaceDefaults(
        invocationsPerMinute=settings.invocations_per_minute,
        concurrentInvocations=settings.concurrent_invocations,
        firesPerMinute=settings.fires_per_minute,
        maxEntities=settings.entities_per_namespace,
        maxDeadLetters=settings.deadletters_per_namespace,
    )


# The 400 OpenWhisk answers when a limit fails its `require(...)` while the body is read.
_MALFORMED = "The request content was malformed:\nrequirement failed: "


def _range_error(
    value: int, bounds: tuple[int, int], render: Any, render_bound: Any, what: str
) -> str | None:
    low, high = bounds
    if value < low:
        return f"{what} {render(value)} below allowed threshold of {render_bound(low)}"
    if value > high:
        return f"{what} {render(value)} exceeds allowed threshold of {render_bound(high)}"
    return None


def _ms(value: int) -> str:
    return f"{value} milliseconds"


def _mb(value: int) -> str:
    return f"{value} MB"


def _bytes(value_mb: int) -> str:
    # OpenWhisk prints its configured bound as a ByteSize read from config, i.e. in bytes ("134217728 B").
    return f"{value_mb * MB} B"


def limit_error(limits: ActionLimits) -> str | None:
    """The first limit outside its range, in OpenWhisk's words (checked in its field order); None if all fit."""
    checks = (
        _range_error(limits.timeout, TIMEOUT_MS, _ms, _ms, "duration"),
        _range_error(limits.memory, MEMORY_MB, _mb, _bytes, "memory"),
        _range_error(limits.logs, LOGS_MB, _mb, _bytes, "log size"),
        _range_error(limits.concurrency, CONCURRENCY, str, str, "concurrency"),
    )
    return next((c for c in checks if c is not None), None)


def check_action_limits(limits: ActionLimits) -> ActionLimits:
    """Return `limits` unchanged, or raise the 400 OpenWhisk answers for the first one out of range."""
    error = limit_error(limits)
    if error is not None:
        raise BadRequest(_MALFORMED + error)
    return limits


def parameters_size(parameters: list[KeyValue]) -> int:
    """OpenWhisk's `Parameters.size`: the UTF-8 bytes of each key plus the compact JSON of its value."""
    return sum(len(p.key.encode()) + len(msgspec.json.encode(p.value)) for p in parameters)


def nested_deeper_than(value: Any, limit: int = NESTING_MAX_DEPTH, raw: bytes | None = None) -> bool:
    """Whether a decoded JSON value nests more than `limit` arrays/objects. With its `raw` JSON, a value with no
    more brackets than the limit is cleared without a walk (nearly every payload)."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def nesting_message(limit: int = NESTING_MAX_DEPTH) -> str:
    return f"The JSON is nested more than {limit} levels deep."


def too_large_message(size: int, limit: int) -> str:
    """OpenWhisk's 413 text for a request (or a message made from one) over its limit."""
    return f"The request content was too large ({size} bytes > {limit} bytes)."


def too_large(field: str, size: int, allowed: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{field} larger than allowed: {size} > {allowed} bytes.")


def check_entity_sizes(
    *,
    exec_size: int = 0,
    parameters: list[KeyValue] | None = None,
    annotations: list[KeyValue] | None = None,
) -> None:
    """413 when code, parameters or annotations pass their limit, checked in OpenWhisk's order."""
    if exec_size > CODE_MAX_BYTES:
        raise too_large("exec", exec_size, CODE_MAX_BYTES)
    for field, values in (("parameters", parameters), ("annotations", annotations)):
        size = parameters_size(values or [])
        if size > PARAMETERS_MAX_BYTES:
            raise too_large(field, size, PARAMETERS_MAX_BYTES)


def system_limits_document(defaults: NamespaceDefaults = OPENWHISK_DEFAULTS) -> dict[str, int]:
    """The `limits` member of `GET /`: durations in ms, memory and logs in bytes, as OpenWhisk shows them."""
    return {
        "actions_per_minute": defaults.invocationsPerMinute,
        "triggers_per_minute": defaults.firesPerMinute,
        "concurrent_actions": defaults.concurrentInvocations,
        "sequence_length": SEQUENCE_MAX_LENGTH,
        "min_action_duration": TIMEOUT_MS[0],
        "max_action_duration": TIMEOUT_MS[1],
        "min_action_memory": MEMORY_MB[0] * MB,
        "max_action_memory": MEMORY_MB[1] * MB,
        "min_action_logs": LOGS_MB[0] * MB,
        "max_action_logs": LOGS_MB[1] * MB,
    }


class EffectiveLimits(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /namespaces/{ns}/limits`: a namespace's overrides filled in with the system values.

    Units as OpenWhisk's limits document: memory and logs in MB, timeouts in ms.
    """

    invocationsPerMinute: int
    concurrentInvocations: int
    firesPerMinute: int
    minActionMemory: int = MEMORY_MB[0]
    maxActionMemory: int = MEMORY_MB[1]
    minActionTimeout: int = TIMEOUT_MS[0]
    maxActionTimeout: int = TIMEOUT_MS[1]
    minActionLogs: int = LOGS_MB[0]
    maxActionLogs: int = LOGS_MB[1]
    minActionConcurrency: int = CONCURRENCY[0]
    maxActionConcurrency: int = CONCURRENCY[1]
    maxParameterSize: int = PARAMETERS_MAX_BYTES
    maxActionInstances: int = CONCURRENT_INVOCATIONS
    # Squall's storage quotas: entities it may hold (a create past it is a 403), dead letters it keeps (the
    # oldest are dropped past it).
    maxEntities: int = ENTITIES_PER_NAMESPACE
    maxDeadLetters: int = DEADLETTERS_PER_NAMESPACE


def effective_limits(
    overrides: NamespaceLimits, defaults: NamespaceDefaults = OPENWHISK_DEFAULTS
) -> EffectiveLimits:
    """A namespace's limits: its own overrides where set, the system defaults elsewhere."""
    concurrent = _or(overrides.concurrentInvocations, defaults.concurrentInvocations)
    return EffectiveLimits(
        invocationsPerMinute=_or(overrides.invocationsPerMinute, defaults.invocationsPerMinute),
        concurrentInvocations=concurrent,
        firesPerMinute=_or(overrides.firesPerMinute, defaults.firesPerMinute),
        # An action cannot run more instances than its namespace may run activations at once.
        maxActionInstances=concurrent,
        maxEntities=_or(overrides.maxEntities, defaults.maxEntities),
        maxDeadLetters=_or(overrides.maxDeadLetters, defaults.maxDeadLetters),
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
