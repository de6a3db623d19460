"""Parameter and annotation lists: de-duplication, the package < binding < action < payload merge, `final`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from broker.entities import KeyValue
from broker.errors import BadRequest

FINAL = "final"

# OpenWhisk's Messages.parametersNotAllowed, answered when a payload overrides a final parameter.
PARAMETERS_NOT_ALLOWED = "Request defines parameters that are not allowed (e.g., reserved properties)."


def normalize(pairs: Iterable[KeyValue]) -> list[KeyValue]:
    """One entry per key, the last value winning, in the order keys first appear.

    OpenWhisk keeps parameters in a map, so a repeated key in a PUT body is one parameter, not two.
    """
    merged: dict[str, KeyValue] = {}
    for pair in pairs:
        merged[pair.key] = pair
    return list(merged.values())


def merge(*layers: Iterable[KeyValue]) -> list[KeyValue]:
    """Layers from weakest to strongest (package, binding, action): a later layer's key replaces an earlier one."""
    return normalize(pair for layer in layers for pair in layer)


def without(pairs: Iterable[KeyValue], keys: Iterable[str]) -> list[KeyValue]:
    """`pairs` minus the given keys (OpenWhisk's `delAnnotations`, or the controller-owned `binding`)."""
    dropped = set(keys)
    return [p for p in pairs if p.key not in dropped]


def lookup(pairs: Iterable[KeyValue], key: str) -> Any:
    """The value of `key`, or None when absent (a JSON null value reads the same)."""
    found = None
    for pair in pairs:
        if pair.key == key:
            found = pair.value  # the last one wins, as in `normalize`
    return found


def has_key(pairs: Iterable[KeyValue], key: str) -> bool:
    return any(p.key == key for p in pairs)


def is_truthy(value: Any) -> bool:
    """OpenWhisk's `Parameters.isTruthy` for an annotation that is present."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value != ""
    return value is not None


def annotation_truthy(annotations: Iterable[KeyValue], key: str, absent: bool) -> bool:
    """Whether annotation `key` is set to a truthy value (`absent` when it is not there)."""
    if not has_key(annotations, key):
        return absent
    return is_truthy(lookup(annotations, key))


def is_final(annotations: Iterable[KeyValue]) -> bool:
    """OpenWhisk reads `final` as a JSON boolean: only `true` counts, not `"true"` or 1."""
    return lookup(annotations, FINAL) is True


def immutable_keys(parameters: Iterable[KeyValue], annotations: Iterable[KeyValue]) -> set[str]:
    """The parameters a payload may not override: the defined ones (non-null) of a `final` action."""
    if not is_final(annotations):
        return set()
    return {p.key for p in normalize(parameters) if p.value is not None}


def check_payload(
    payload: Mapping[str, Any], parameters: list[KeyValue], annotations: list[KeyValue]
) -> None:
    """400 when the payload sets a final parameter (checked after package and binding merging)."""
    if immutable_keys(parameters, annotations) & set(payload):
        raise BadRequest(PARAMETERS_NOT_ALLOWED)


def as_arguments(parameters: Iterable[KeyValue], payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The invocation arguments: bound parameters as an object, the payload's keys superseding them."""
    arguments = {p.key: p.value for p in normalize(parameters)}
    arguments.update(payload or {})
    return arguments


def invocation_arguments(
    *,
    package: Iterable[KeyValue] = (),
    binding: Iterable[KeyValue] = (),
    action: Iterable[KeyValue] = (),
    annotations: Iterable[KeyValue] = (),
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything an action receives, merged package < binding < action < payload; 400 on a final override."""
    bound = merge(package, binding, action)
    check_payload(payload or {}, bound, list(annotations))
    return as_arguments(bound, payload)
