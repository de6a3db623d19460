"""Trigger request and response shapes, and the pure steps of a trigger PUT: size limits, feed check, merge."""

from __future__ import annotations

from typing import Any

import msgspec

from api.entity_views import EntitySummary
from broker.entities import (
    INITIAL_VERSION,
    KeyValue,
    Trigger,
    TriggerLimits,
    bump_patch,
    validate_name,
)
from broker.errors import BadRequest
from broker.limits import check_entity_sizes
from broker.params import normalize

FEED_ANNOTATION = "feed"


class TriggerPut(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `PUT …/triggers/{name}` (OpenWhisk's WhiskTriggerPut): absent fields keep stored values.

    Unknown fields are ignored, as OpenWhisk's JSON reader does.
    """

    parameters: list[KeyValue] | None = None
    limits: TriggerLimits | None = None
    version: str | None = None
    publish: bool | None = None
    annotations: list[KeyValue] | None = None


class TriggerSummary(EntitySummary, frozen=True, kw_only=True):
    """A list item of `GET …/triggers`: OpenWhisk's view leaves out parameters, limits and rules."""


class TriggerCount(msgspec.Struct, frozen=True, kw_only=True):
    """`GET …/triggers?count=true`."""

    triggers: int


def summary(trigger: Trigger) -> TriggerSummary:
    return TriggerSummary(
        namespace=trigger.namespace,
        name=trigger.name,
        version=trigger.version,
        publish=trigger.publish,
        annotations=trigger.annotations,
        updated=trigger.updated,
    )


def valid_feed_name(value: Any) -> bool:
    """OpenWhisk's `EntityPath.validate`: one or more valid name segments separated by `/`."""
    if not isinstance(value, str):
        return False
    parts = [p for p in value.split("/") if p]
    if not parts:
        return False
    try:
        for part in parts:
            validate_name(part)
    except BadRequest:
        return False
    return True


def check_feed(annotations: list[KeyValue]) -> None:
    """A `feed` annotation must name an entity (the CLI stores the feed action's path there)."""
    for pair in annotations:
        if pair.key == FEED_ANNOTATION and not valid_feed_name(pair.value):
            raise BadRequest("Feed name is not valid")


def check_put(put: TriggerPut) -> None:
    """Everything about a PUT body that can be refused before reading the store."""
    check_entity_sizes(parameters=put.parameters, annotations=put.annotations)
    if put.version is not None:
        bump_patch(put.version)  # validates the semantic version


def build_trigger(put: TriggerPut, namespace: str, name: str, current: Trigger | None) -> Trigger:
    """The trigger a PUT stores: a new one, or `current` with the fields the body gives replaced.

    The feed annotation is validated on create only, as OpenWhisk does; an update keeps the rules map
    (rule links live on the trigger) and its version is bumped by the caller.
    """
    # OpenWhisk keeps parameters and annotations in maps: a repeated key is one entry, the last one winning.
    parameters = None if put.parameters is None else normalize(put.parameters)
    annotations = None if put.annotations is None else normalize(put.annotations)
    if current is None:
        annotations = annotations or []
        check_feed(annotations)
        return Trigger(
            namespace=namespace,
            name=name,
            parameters=parameters or [],
            limits=TriggerLimits(),
            version=put.version or INITIAL_VERSION,
            publish=bool(put.publish),
            annotations=annotations,
        )
    return msgspec.structs.replace(
        current,
        parameters=current.parameters if parameters is None else parameters,
        publish=current.publish if put.publish is None else put.publish,
        annotations=current.annotations if annotations is None else annotations,
    )
