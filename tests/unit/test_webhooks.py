"""The webhook feed's contract: its URL, what actions see of a delivery, and its provider's configuration."""

from __future__ import annotations

import pytest

from broker.errors import BadRequest
from broker.feed_registry import FeedRegistration
from broker.webhooks import forwarded_headers, webhook_path, webhook_payload
from feeds.webhooks import WebhookProvider


def test_the_path_escapes_each_name_as_one_segment() -> None:
    assert webhook_path("guest", "t") == "/api/v1/webhooks/guest/t"
    assert webhook_path("a b", "x@y&z") == "/api/v1/webhooks/a%20b/x%40y%26z"


def test_signatures_and_credentials_never_reach_actions() -> None:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": "sha256=…",
        "X-Hub-Signature": "sha1=…",
        "Stripe-Signature": "t=1,v1=…",
        "webhook-signature": "v1,…",
        "webhook-id": "msg_1",
        "Authorization": "Basic …",
        "Cookie": "a=b",
    }
    assert forwarded_headers(headers) == {
        "content-type": "application/json",
        "x-github-event": "push",
        "webhook-id": "msg_1",
    }


def test_payloads() -> None:
    assert webhook_payload("application/json", b'{"a": [1]}') == {"a": [1]}
    assert webhook_payload(None, b"") == {}
    assert webhook_payload("application/json", b"[1]") == {"__ow_body": "[1]"}
    assert webhook_payload("application/x-www-form-urlencoded", b"a=1&b=2") == {"__ow_body": "a=1&b=2"}
    assert webhook_payload("text/plain; charset=utf-8", b"hi") == {"__ow_body": "hi"}
    assert webhook_payload("application/octet-stream", b"\x00\x01") == {"__ow_body": "AAE="}
    assert webhook_payload("text/plain", b"\xff") == {"__ow_body": "/w=="}, "not text after all: base64"


def test_the_provider_generates_or_keeps_secrets_and_answers_the_url() -> None:
    provider = WebhookProvider("http://hooks.example:8080/")
    generated = provider.configure({}, None, 0)
    assert generated["secret"].startswith("whsec_") and "scheme" not in generated
    given = provider.configure({"secret": "my-shared-secret", "scheme": "github"}, None, 0)
    assert given == {"secret": "my-shared-secret", "scheme": "github"}
    assert provider.configure({"scheme": "stripe"}, given, 1) == {
        "secret": "my-shared-secret",
        "scheme": "stripe",
    }
    assert provider.configure({"scheme": None}, given, 1) == {"secret": "my-shared-secret"}
    with pytest.raises(BadRequest, match="whsec_"):
        provider.configure({"scheme": "standard"}, given, 1)
    with pytest.raises(BadRequest, match="scheme"):
        provider.configure({"scheme": "paypal"}, None, 0)
    registration = FeedRegistration(
        namespace="a b",
        trigger="t",
        feed="/whisk.system/webhooks/webhook",
        provider="webhook",
        subject="u",
        config=generated,
    )
    assert provider.answer(registration) == {
        "url": "http://hooks.example:8080/api/v1/webhooks/a%20b/t",
        "secret": generated["secret"],
    }
