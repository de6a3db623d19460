"""What a listing needs of an entity, carried in its KV message's headers so that listing never reads code."""

from __future__ import annotations

import base64
import binascii
from typing import Final, TypeVar

import msgspec
from msgspec import UNSET

from broker import codec
from broker.entities import Action, Entity, Package, Trigger
from broker.errors import BadRequest

E = TypeVar("E", bound=Entity)

# Headers of an entities-bucket message: the collection the name belongs to, and the entity's summary.
KIND_HEADER: Final = "Squall-Kind"
SUMMARY_HEADER: Final = "Squall-Summary"
# A summary larger than this (only large annotations make one) is left out of the headers: such an entity
# is listed by reading it whole. Headers count against the 1 MB message limit and ride on every KV write.
SUMMARY_MAX_BYTES: Final = 64 * 1024


def summary_of(entity: E) -> E:
    """The entity as listings show it: without action code, parameters or a trigger's rules, which no
    listing, package view or catalog scan uses, and which hold nearly all of an entity's bytes."""
    if isinstance(entity, Action):
        exec_ = msgspec.structs.replace(entity.exec, code=UNSET)
        return msgspec.structs.replace(entity, exec=exec_, parameters=[])
    if isinstance(entity, Trigger):
        return msgspec.structs.replace(entity, parameters=[], rules=UNSET)
    if isinstance(entity, Package):
        return msgspec.structs.replace(entity, parameters=[])
    return entity


def summary_headers(kind: str, entity: Entity) -> dict[str, str]:
    """The headers of an entity's KV message: its kind always, its summary when small enough."""
    headers = {KIND_HEADER: kind}
    encoded = codec.encode(summary_of(entity))
    if len(encoded) <= SUMMARY_MAX_BYTES:
        # base64: header values must be one line of ASCII, and JSON strings may hold any character.
        headers[SUMMARY_HEADER] = base64.b64encode(encoded).decode("ascii")
    return headers


def read_summary(headers: dict[str, str] | None, type_: type[E]) -> E | None:
    """The summary in a message's headers, or None when it has none (written before summaries, or too large)."""
    value = (headers or {}).get(SUMMARY_HEADER)
    if not value:
        return None
    try:
        return codec.decode(base64.b64decode(value, validate=True), type_)
    except (binascii.Error, ValueError, BadRequest):
        return None


def kind_of(headers: dict[str, str] | None) -> str | None:
    """The collection a message's headers name (None for a message written before they did)."""
    return (headers or {}).get(KIND_HEADER)
