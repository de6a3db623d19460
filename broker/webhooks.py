"""The webhook feed's contract, shared by its provider (feeds role) and its ingress (API role): where a trigger's
webhook is served, what its registration stores, and how a delivery becomes a fire's payload and headers.

A JSON object body is the payload as it is. Any other body arrives in OpenWhisk's raw form (that of web actions
with `raw-http`): `{"__ow_body": <text>}` for a textual content type (text/*, JSON, XML, form data), else
`{"__ow_body": <base64>}`; the content type is in `__ow_headers`.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from broker.webhook_signatures import SIGNATURE_HEADERS

WEBHOOK_ROUTE: Final = "/api/v1/webhooks/{namespace}/{trigger}"
PROVIDER: Final = "webhook"
# What a sender may post: OpenWhisk's payload limit.
BODY_MAX_BYTES: Final = 1024 * 1024
# Request headers an action never sees: the caller's credentials, and the signatures.
HIDDEN_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization", *SIGNATURE_HEADERS})
_TEXT_TYPES: Final = frozenset(
    {"application/json", "application/xml", "application/x-www-form-urlencoded", "application/javascript"}
)


class WebhookConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A webhook registration's `config`: its signing secret, and the one scheme it accepts (None: any)."""

    secret: str
    scheme: str | None = None


def webhook_path(namespace: str, trigger: str) -> str:
    """The path of `namespace`'s `trigger`'s webhook (names may hold spaces, '@', …: each is one segment)."""
    return WEBHOOK_ROUTE.format(
        namespace=urllib.parse.quote(namespace, safe=""), trigger=urllib.parse.quote(trigger, safe="")
    )


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """What the rule's actions get as `__ow_headers`: the delivery's headers without credentials or signatures."""
    return {name.lower(): value for name, value in headers.items() if name.lower() not in HIDDEN_HEADERS}


def is_textual(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return not media or media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def webhook_payload(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The fire's payload for a delivery's body (see the module's docstring)."""
    if body.strip().startswith(b"{"):
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
    if not body:
        return {}
    if is_textual(content_type):
        try:
            return {"__ow_body": body.decode()}
        except UnicodeDecodeError:
            pass  # declared as text but is not: passed on as bytes
    return {"__ow_body": base64.b64encode(body).decode()}
