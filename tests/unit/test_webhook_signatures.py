"""Webhook signatures by scheme: good, bad, missing, stale and the replay window's edges, and the secret format."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from broker.errors import BadRequest, Unauthorized
from broker.webhook_signatures import (
    GITHUB,
    STANDARD,
    STRIPE,
    TOLERANCE_S,
    Verified,
    check_scheme,
    check_secret,
    new_secret,
    sign_github,
    sign_standard,
    sign_stripe,
    verify,
)

BODY = b'{"id":"evt_1","type":"push"}'
SECRET = new_secret()
NOW = 1_750_000_000


def _hex(key: bytes, message: bytes) -> str:
    # Computed here from the schemes' documentation, independently of the module's signers.
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def github_headers(body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {"x-hub-signature-256": "sha256=" + _hex(secret.encode(), body), "x-github-delivery": "d-1"}


def stripe_headers(body: bytes = BODY, secret: str = SECRET, t: int = NOW) -> dict[str, str]:
    return {"stripe-signature": f"t={t},v1={_hex(secret.encode(), f'{t}.'.encode() + body)}"}


def standard_headers(
    body: bytes = BODY, secret: str = SECRET, t: int = NOW, msg: str = "msg_1"
) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg}.{t}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg,
        "webhook-timestamp": str(t),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


# -- good signatures, by configured scheme and detected -------------------------------------------------------


@pytest.mark.parametrize("scheme", [GITHUB, None])
def test_github_good(scheme: str | None) -> None:
    assert verify(github_headers(), BODY, SECRET, NOW, scheme=scheme) == Verified(
        scheme=GITHUB, delivery_id="d-1"
    )


@pytest.mark.parametrize("scheme", [STRIPE, None])
def test_stripe_good_and_its_delivery_id_is_the_event_id(scheme: str | None) -> None:
    assert verify(stripe_headers(), BODY, SECRET, NOW, scheme=scheme) == Verified(
        scheme=STRIPE, delivery_id="evt_1"
    )


@pytest.mark.parametrize("scheme", [STANDARD, None])
def test_standard_good(scheme: str | None) -> None:
    assert verify(standard_headers(), BODY, SECRET, NOW, scheme=scheme) == Verified(
        scheme=STANDARD, delivery_id="msg_1"
    )


def test_the_module_signers_agree_with_the_documented_computations() -> None:
    assert sign_github(BODY, SECRET) == github_headers()["x-hub-signature-256"]
    assert sign_stripe(BODY, SECRET, NOW) == stripe_headers()["stripe-signature"]
    assert sign_standard(BODY, SECRET, "msg_1", NOW) == standard_headers()["webhook-signature"]


def test_any_matching_signature_of_several_counts() -> None:
    good = stripe_headers()["stripe-signature"]
    t, v1 = good.split(",")
    both = {"stripe-signature": f"{t},v1={'0' * 64},{v1},v0=abc"}
    assert verify(both, BODY, SECRET, NOW).scheme == STRIPE
    std = standard_headers()
    std["webhook-signature"] = f"v1,{base64.b64encode(b'x' * 32).decode()} {std['webhook-signature']}"
    assert verify(std, BODY, SECRET, NOW).delivery_id == "msg_1"


# -- bad and missing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [github_headers, stripe_headers, standard_headers])
def test_a_changed_body_is_refused(make: object) -> None:
    headers = make()  # type: ignore[operator]
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, BODY + b" ", SECRET, NOW)


@pytest.mark.parametrize("make", [github_headers, stripe_headers, standard_headers])
def test_another_secret_is_refused(make: object) -> None:
    headers = make()  # type: ignore[operator]
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, BODY, new_secret(), NOW)


def test_no_signature_at_all_is_refused() -> None:
    with pytest.raises(Unauthorized, match="missing"):
        verify({"content-type": "application/json"}, BODY, SECRET, NOW)


@pytest.mark.parametrize(
    ("scheme", "headers"),
    [(GITHUB, stripe_headers()), (STRIPE, github_headers()), (STANDARD, github_headers())],
)
def test_a_configured_scheme_takes_no_other(scheme: str, headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        verify(headers, BODY, SECRET, NOW, scheme=scheme)


def test_incomplete_standard_headers_are_refused() -> None:
    headers = standard_headers()
    del headers["webhook-id"]
    with pytest.raises(Unauthorized, match="incomplete"):
        verify(headers, BODY, SECRET, NOW, scheme=STANDARD)


@pytest.mark.parametrize("header", ["t=abc,v1=00", "v1=00", f"t={NOW}", f"t={NOW},v0=00"])
def test_malformed_stripe_headers_are_refused(header: str) -> None:
    with pytest.raises(Unauthorized):
        verify({"stripe-signature": header}, BODY, SECRET, NOW)


def test_a_github_signature_without_its_prefix_is_refused() -> None:
    headers = github_headers()
    headers["x-hub-signature-256"] = headers["x-hub-signature-256"].removeprefix("sha256=")
    with pytest.raises(Unauthorized):
        verify(headers, BODY, SECRET, NOW)


# -- stale: the replay window ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [stripe_headers, standard_headers])
@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)]
)
def test_timestamps_within_the_tolerance_pass_and_beyond_it_are_replays(
    make: object, offset: int, ok: bool
) -> None:
    headers = make(t=NOW - offset)  # type: ignore[operator]
    if ok:
        verify(headers, BODY, SECRET, NOW)
    else:
        with pytest.raises(Unauthorized, match="replay"):
            verify(headers, BODY, SECRET, NOW)


def test_the_tolerance_is_a_parameter() -> None:
    headers = stripe_headers(t=NOW - 30)
    verify(headers, BODY, SECRET, NOW, tolerance_s=30)
    with pytest.raises(Unauthorized):
        verify(headers, BODY, SECRET, NOW, tolerance_s=29)
    assert TOLERANCE_S == 300


def test_github_has_no_timestamp_so_no_window() -> None:
    assert verify(github_headers(), BODY, SECRET, NOW + 10 * 86400).scheme == GITHUB


# -- secrets ----------------------------------------------------------------------------------------------------


def test_generated_secrets_are_standard_webhooks_secrets_and_differ() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert secret != new_secret()
    assert check_secret(secret, STANDARD) == secret


def test_given_secrets_are_checked() -> None:
    assert check_secret("plain-github-secret", GITHUB) == "plain-github-secret"
    assert check_secret("plain-github-secret", None) == "plain-github-secret"
    for bad in ("short", 42, "x" * 300, "with\nnewline"):
        with pytest.raises(BadRequest):
            check_secret(bad, None)
    with pytest.raises(BadRequest, match="whsec_"):
        check_secret("not base64 at all!", STANDARD)


def test_a_plain_secret_cannot_verify_standard_deliveries() -> None:
    headers = standard_headers()
    with pytest.raises(Unauthorized, match="secret"):
        verify(headers, BODY, "not base64 at all!", NOW)


def test_schemes_are_checked() -> None:
    assert check_scheme(None) is None
    assert check_scheme("stripe") == STRIPE
    with pytest.raises(BadRequest, match="github, stripe, standard"):
        check_scheme("svix")
