"""CloudEvents 1.0 over HTTP (structured and binary content modes): reading a fire request as an event.

Pure: headers and body in, payload and context attributes out. A plain (non-CloudEvent) fire reads as a
payload without attributes. The payload an action receives is always a JSON object, as OpenWhisk's
arguments are: event data that is an object is the payload itself, anything else arrives as `data` (JSON
or text) or `data_base64` (other bytes).
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker import codec
from broker.errors import BadRequest

SPEC_VERSION: Final = "1.0"
STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
HEADER_PREFIX: Final = "ce-"
REQUIRED: Final = ("id", "source", "specversion", "type")
_DATA_MEMBERS: Final = ("data", "data_base64")


@dataclass(frozen=True, slots=True)
class Incoming:
    """A fire's payload, and its CloudEvent context attributes when it was one (None otherwise)."""

    payload: dict[str, Any]
    attributes: dict[str, Any] | None = None

    @property
    def idempotency_key(self) -> str | None:
        """`source` + `id` identify a CloudEvent uniquely (spec § id), so a resent event is a repeat."""
        if self.attributes is None:
            return None
        return f"{self.attributes['source']}\x1f{self.attributes['id']}"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _malformed(why: str) -> BadRequest:
    return BadRequest(f"The request content was malformed:\n{why}")


def _as_payload(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    return data if isinstance(data, dict) else {"data": data}


def _check_attributes(attributes: Mapping[str, Any]) -> None:
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise _malformed(f"The CloudEvent lacks its required attribute(s): {', '.join(missing)}.")
    if attributes["specversion"] != SPEC_VERSION:
        raise _malformed(
            f"The CloudEvent specversion '{attributes['specversion']}' is not supported; use {SPEC_VERSION}."
        )
    for name, value in attributes.items():
        if not (name.isascii() and name.isalnum() and name.islower()) or len(name) > 20:
            raise _malformed(f"The CloudEvent attribute name '{name[:40]}' is not allowed (a-z, 0-9, ≤ 20).")
        if not isinstance(value, str | int | bool):
            raise _malformed(f"The CloudEvent attribute '{name}' must be a string, an integer or a boolean.")


def _structured(raw: bytes) -> Incoming:
    document = codec.decode_json(raw)
    if not isinstance(document, dict):
        raise _malformed("A structured CloudEvent must be a JSON object.")
    attributes = {k: v for k, v in document.items() if k not in _DATA_MEMBERS}
    _check_attributes(attributes)
    if "data" in document and "data_base64" in document:
        raise _malformed("A CloudEvent carries either data or data_base64, not both.")
    if "data_base64" in document:
        encoded = document["data_base64"]
        if not isinstance(encoded, str):
            raise _malformed("The CloudEvent data_base64 must be a string.")
        try:
            base64.b64decode(encoded, validate=True)
        except ValueError:
            raise _malformed("The CloudEvent data_base64 is not valid base64.") from None
        return Incoming(payload={"data_base64": encoded}, attributes=attributes)
    return Incoming(payload=_as_payload(document.get("data")), attributes=attributes)


def _binary(headers: Mapping[str, str], raw: bytes) -> Incoming:
    attributes: dict[str, Any] = {
        name[len(HEADER_PREFIX) :]: urllib.parse.unquote(value)
        for name, value in headers.items()
        if name.lower().startswith(HEADER_PREFIX)
    }
    attributes = {k.lower(): v for k, v in attributes.items()}
    content_type = headers.get("content-type")
    if content_type:
        attributes["datacontenttype"] = content_type
    _check_attributes(attributes)
    kind = media_type(content_type)
    if not raw:
        return Incoming(payload={}, attributes=attributes)
    if not kind or kind == "application/json" or kind.endswith("+json"):
        return Incoming(payload=_as_payload(codec.decode_json(raw)), attributes=attributes)
    if kind.startswith("text/"):
        try:
            return Incoming(payload={"data": raw.decode()}, attributes=attributes)
        except UnicodeDecodeError:
            raise _malformed("The CloudEvent data is not valid UTF-8 text.") from None
    return Incoming(payload={"data_base64": base64.b64encode(raw).decode()}, attributes=attributes)


def _plain(raw: bytes) -> Incoming:
    """OpenWhisk's fire body: a JSON object, an empty body meaning `{}`."""
    if not raw.strip():
        return Incoming(payload={})
    value = codec.decode_json(raw)
    if not isinstance(value, dict):
        raise _malformed("Object expected.")
    return Incoming(payload=value)


def read_event(headers: Mapping[str, str], raw: bytes) -> Incoming:
    """The fire request as an event: a structured or binary CloudEvent, or a plain OpenWhisk payload."""
    kind = media_type(headers.get("content-type"))
    if kind == STRUCTURED:
        return _structured(raw)
    if kind == BATCH:
        raise _malformed("Batched CloudEvents are not accepted: send one event per request.")
    if any(name.lower() == "ce-specversion" for name in headers):
        return _binary(headers, raw)
    return _plain(raw)
