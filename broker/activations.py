"""The activation record (OpenWhisk field names), its list summary, status codes and activation ids."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from broker.entities import KeyValue
from broker.errors import BadRequest

# OpenWhisk's four outcomes, in the order of their internal codes (0..3).
SUCCESS: Final = "success"
APPLICATION_ERROR: Final = "application error"
DEVELOPER_ERROR: Final = "action developer error"
INTERNAL_ERROR: Final = "whisk internal error"

STATUS_CODES: Final[dict[str, int]] = {
    SUCCESS: 0,
    APPLICATION_ERROR: 1,
    DEVELOPER_ERROR: 2,
    INTERNAL_ERROR: 3,
}

_ACTIVATION_ID = re.compile(r"[0-9a-f]{32}")


class ActivationResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`response` of an activation. OpenWhisk emits no `statusCode` here (only list items carry one)."""

    status: str
    success: bool
    result: Any = None
    size: int | None = None  # set when the result was truncated: its original size in bytes


class Activation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One run of an action, or one fire of a trigger, exactly as `GET …/activations/{id}` returns it.

    Fields OpenWhisk always emits have no default (omit_defaults would otherwise drop `publish: false` or
    `logs: []`); the ones it leaves out when unset default to a value that is omitted.
    """

    namespace: str
    name: str
    subject: str
    activationId: str
    start: int  # epoch ms
    end: int = 0  # epoch ms; 0 (omitted) for trigger records, which never "end"
    duration: int | None = None  # ms; may legitimately be 0, hence None for "absent"
    cause: str | None = None  # the enclosing sequence's activation id
    response: ActivationResponse
    logs: list[str]
    version: str
    publish: bool
    annotations: list[KeyValue]


class ActivationSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A list item of `GET …/activations` (without `docs=true`)."""

    namespace: str
    name: str
    version: str
    publish: bool
    annotations: list[KeyValue]
    activationId: str
    start: int
    cause: str | None = None
    end: int = 0
    duration: int | None = None
    statusCode: int | None = None


def make_response(status: str, result: Any = None, size: int | None = None) -> ActivationResponse:
    """A response whose `success` agrees with its `status`; an unknown status is a programming error."""
    if status not in STATUS_CODES:
        raise ValueError(f"unknown activation status {status!r}")
    return ActivationResponse(status=status, success=status == SUCCESS, result=result, size=size)


def status_code(status: str) -> int:
    """OpenWhisk's internal code of a status (0..3); anything unrecognised counts as an internal error."""
    return STATUS_CODES.get(status, STATUS_CODES[INTERNAL_ERROR])


def summarize(record: Activation) -> ActivationSummary:
    """The list item of a record: `end`, `duration` and `statusCode` appear only once it has ended."""
    if not record.end:
        return ActivationSummary(
            namespace=record.namespace,
            name=record.name,
            version=record.version,
            publish=record.publish,
            annotations=record.annotations,
            activationId=record.activationId,
            start=record.start,
            cause=record.cause,
        )
    duration = record.duration if record.duration is not None else record.end - record.start
    return ActivationSummary(
        namespace=record.namespace,
        name=record.name,
        version=record.version,
        publish=record.publish,
        annotations=record.annotations,
        activationId=record.activationId,
        start=record.start,
        cause=record.cause,
        end=record.end,
        duration=duration,
        statusCode=status_code(record.response.status),
    )


def annotation(record: Activation, key: str, default: Any = None) -> Any:
    """The value of one annotation of a record (e.g. `path`, `kind`, `initTime`)."""
    for pair in record.annotations:
        if pair.key == key:
            return pair.value
    return default


def entity_path(record: Activation) -> str:
    """`pkg/name` for a packaged action, else `name`: what the list filter `name=` is compared with.

    As in OpenWhisk's activation view, the package comes from the `path` annotation (`ns/pkg/name`), so a
    plain `name=a` matches only the default-package `a`. A record whose `namespace` is `ns/pkg` (a form some
    writers use) is understood as well.
    """
    path = annotation(record, "path")
    if isinstance(path, str) and path.count("/") >= 2:
        return path.split("/", 1)[1]
    if "/" in record.namespace:
        return f"{record.namespace.split('/', 1)[1]}/{record.name}"
    return record.name


def log_time(epoch_ms: int) -> str:
    """A log line's timestamp as OpenWhisk prints it (ISO-8601, UTC, padded to 30 characters)."""
    stamp = datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{stamp}Z".ljust(30)


def new_activation_id() -> str:
    """A fresh activation id: 32 lowercase hex digits, as OpenWhisk makes them."""
    return uuid.uuid4().hex


def validate_activation_id(value: str) -> str:
    """Return `value` if it is a well-formed activation id, else raise BadRequest (OpenWhisk's 400)."""
    if not _ACTIVATION_ID.fullmatch(value):
        raise BadRequest(
            f"The activation id '{value[:64]}' is not valid: it must be 32 lowercase hexadecimal characters."
        )
    return value
