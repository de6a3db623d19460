"""Webhook signatures, pure: secrets, and verifying a delivery by the sender's scheme (GitHub, Stripe, Standard).

The three schemes sign with HMAC-SHA256 and differ in what they sign, how they carry it and how they read the
secret:
- GitHub: `X-Hub-Signature-256: sha256=<hex>` of the raw body, the secret's bytes as key; no timestamp, so no
  replay window (the delivery id `X-GitHub-Delivery` makes a redelivery fire once).
- Stripe: `Stripe-Signature: t=<unix s>,v1=<hex>[,v1=…]` of `"{t}.{body}"`, the secret's bytes (the whole
  `whsec_…` string) as key; any matching `v1` counts; the delivery id is the event's `id` in the body.
- Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> [v1,<base64>…]` of
  `"{id}.{timestamp}.{body}"`, the base64 after `whsec_` decoded as key.
A generated secret is `whsec_<base64 of 32 random bytes>`, which every scheme can use. Timestamps further than
`tolerance_s` from now, in either direction, are refused (a captured request cannot be replayed later). Every
comparison of signatures is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Final

import msgspec

from broker.errors import BadRequest, Unauthorized

GITHUB, STRIPE, STANDARD = "github", "stripe", "standard"
SCHEMES: Final = (GITHUB, STRIPE, STANDARD)
TOLERANCE_S: Final = 300.0  # Stripe's and Standard Webhooks' default
SECRET_PREFIX: Final = "whsec_"
SECRET_MIN, SECRET_MAX = 8, 256

GITHUB_SIGNATURE: Final = "x-hub-signature-256"
GITHUB_DELIVERY: Final = "x-github-delivery"
STRIPE_SIGNATURE: Final = "stripe-signature"
STANDARD_ID, STANDARD_TIMESTAMP, STANDARD_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"
# Never passed on to actions: they are of no use past verification and would let an action replay the request.
SIGNATURE_HEADERS: Final = frozenset(
    {GITHUB_SIGNATURE, "x-hub-signature", STRIPE_SIGNATURE, STANDARD_SIGNATURE}
)
# Which scheme a delivery uses, when the feed does not fix it: the first whose signature header is present.
_DETECT: Final = ((STANDARD_SIGNATURE, STANDARD), (STRIPE_SIGNATURE, STRIPE), (GITHUB_SIGNATURE, GITHUB))


class Verified(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery whose signature holds: by which scheme, and the sender's delivery id when it gives one."""

    scheme: str
    delivery_id: str | None = None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: object, scheme: str | None) -> str:
    """A secret given at CREATE/UPDATE, or BadRequest saying why not; a Standard Webhooks feed needs one its
    scheme can read (`whsec_<base64>`)."""
    if not isinstance(secret, str) or not SECRET_MIN <= len(secret) <= SECRET_MAX or not secret.isprintable():
        raise BadRequest(
            f"The parameter 'secret' must be a string of {SECRET_MIN} to {SECRET_MAX} characters."
        )
    if scheme == STANDARD and _base64_key(secret) is None:
        raise BadRequest("A Standard Webhooks secret is 'whsec_' followed by base64.")
    return secret


def check_scheme(scheme: object) -> str | None:
    if scheme is None:
        return None
    if scheme not in SCHEMES:
        raise BadRequest(f"The parameter 'scheme' must be one of {', '.join(SCHEMES)} (or absent: any).")
    return str(scheme)


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now_s: float,
    *,
    scheme: str | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> Verified:
    """Check a delivery (`headers` with lowercase names) against `secret` by `scheme`, or by the scheme its
    headers show when None; Unauthorized saying what is wrong otherwise."""
    if scheme is None:
        scheme = next((found for header, found in _DETECT if header in headers), None)
        if scheme is None:
            raise Unauthorized(
                "The webhook signature is missing: send X-Hub-Signature-256, Stripe-Signature or "
                "webhook-id/webhook-timestamp/webhook-signature."
            )
    if scheme == GITHUB:
        return _github(headers, body, secret)
    if scheme == STRIPE:
        return _stripe(headers, body, secret, now_s, tolerance_s)
    if scheme == STANDARD:
        return _standard(headers, body, secret, now_s, tolerance_s)
    raise ValueError(f"unknown webhook scheme {scheme!r}")


def sign_github(body: bytes, secret: str) -> str:
    return "sha256=" + _hmac(secret.encode(), body).hex()


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    return f"t={timestamp},v1={_hmac(secret.encode(), f'{timestamp}.'.encode() + body).hex()}"


def sign_standard(body: bytes, secret: str, delivery_id: str, timestamp: int) -> str:
    key = _base64_key(secret)
    if key is None:
        raise BadRequest("A Standard Webhooks secret is 'whsec_' followed by base64.")
    digest = _hmac(key, f"{delivery_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode()


# -- the schemes ---------------------------------------------------------------------------------------------


def _github(headers: Mapping[str, str], body: bytes, secret: str) -> Verified:
    given = headers.get(GITHUB_SIGNATURE)
    if given is None:
        raise Unauthorized("The webhook signature is missing: X-Hub-Signature-256.")
    if not hmac.compare_digest(given.strip().encode(), sign_github(body, secret).encode()):
        raise Unauthorized("The webhook signature (X-Hub-Signature-256) does not match.")
    return Verified(scheme=GITHUB, delivery_id=headers.get(GITHUB_DELIVERY) or None)


def _stripe(
    headers: Mapping[str, str], body: bytes, secret: str, now_s: float, tolerance_s: float
) -> Verified:
    given = headers.get(STRIPE_SIGNATURE)
    if given is None:
        raise Unauthorized("The webhook signature is missing: Stripe-Signature.")
    timestamp: str | None = None
    candidates: list[str] = []
    for item in given.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise Unauthorized("The Stripe-Signature header needs t=<timestamp> and at least one v1=<signature>.")
    _check_time(timestamp, now_s, tolerance_s, "Stripe-Signature t")
    expected = _hmac(secret.encode(), f"{timestamp}.".encode() + body).hex().encode()
    # Every candidate is compared (no early exit), so the time taken tells nothing about which one matched.
    matched = [hmac.compare_digest(candidate.encode(), expected) for candidate in candidates]
    if not any(matched):
        raise Unauthorized("The webhook signature (Stripe-Signature v1) does not match.")
    return Verified(scheme=STRIPE, delivery_id=_event_id(body))


def _standard(
    headers: Mapping[str, str], body: bytes, secret: str, now_s: float, tolerance_s: float
) -> Verified:
    delivery_id = headers.get(STANDARD_ID)
    timestamp = headers.get(STANDARD_TIMESTAMP)
    given = headers.get(STANDARD_SIGNATURE)
    if not delivery_id or not timestamp or not given:
        raise Unauthorized(
            "The webhook signature is incomplete: Standard Webhooks need webhook-id, webhook-timestamp and "
            "webhook-signature."
        )
    _check_time(timestamp, now_s, tolerance_s, "webhook-timestamp")
    key = _base64_key(secret)
    if key is None:
        raise Unauthorized("This feed's secret is not a Standard Webhooks secret ('whsec_' and base64).")
    expected = base64.b64encode(_hmac(key, f"{delivery_id}.{timestamp}.".encode() + body))
    matched = []
    for item in given.split():
        version, _, signature = item.partition(",")
        if version == "v1":
            matched.append(hmac.compare_digest(signature.encode(), expected))
    if not any(matched):
        raise Unauthorized("The webhook signature (webhook-signature v1) does not match.")
    return Verified(scheme=STANDARD, delivery_id=delivery_id)


# -- helpers -------------------------------------------------------------------------------------------------


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _check_time(raw: str, now_s: float, tolerance_s: float, what: str) -> None:
    if not raw.isdigit():
        raise Unauthorized(f"The webhook timestamp ({what}) must be a Unix time in seconds.")
    if abs(now_s - int(raw)) > tolerance_s:
        raise Unauthorized(
            f"The webhook timestamp ({what}) is more than {tolerance_s:g} s away from now: refused as a replay."
        )


def _base64_key(secret: str) -> bytes | None:
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def _event_id(body: bytes) -> str | None:
    """A Stripe event's `id` (`evt_…`): the same for every retry of one event."""
    try:
        event = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    found = event.get("id") if isinstance(event, dict) else None
    return found if isinstance(found, str) and found else None
