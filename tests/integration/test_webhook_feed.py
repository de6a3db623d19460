"""The webhook feed on real servers: lifecycle through the API and the feeds role, deliveries through the ingress
route, fires through the one fire path (TRIGGERS → rule engine → invoker with an echoing pool → MongoDB)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from broker.activation_store import ActivationStore
from broker.webhook_signatures import sign_github, sign_standard, sign_stripe
from feeds.service import FeedsRole
from tests.integration.feeds_support import (
    feeds_platform,
    lifecycle,
    record_of,
    setup_trigger,
    trigger_records,
)

__all__ = ["feeds_platform"]  # the fixture, used by name

FEED = "webhooks/webhook"


def signed(scheme: str, body: bytes, secret: str, delivery: str, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    if scheme == "github":
        return {
            "X-Hub-Signature-256": sign_github(body, secret),
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": "push",
        }
    if scheme == "stripe":
        return {"Stripe-Signature": sign_stripe(body, secret, t)}
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(t),
        "webhook-signature": sign_standard(body, secret, delivery, t),
    }


async def create_hook(client: httpx.AsyncClient, key: str, **params: Any) -> tuple[str, str]:
    """A trigger `t` with a rule and a webhook feed: the webhook's path and secret."""
    await setup_trigger(client)
    answer = await lifecycle(client, FEED, "CREATE", key, **params)
    assert set(answer) == {"url", "secret"}, answer
    return answer["url"].removeprefix("http://127.0.0.1:3233"), answer["secret"]


def body_of(delivery: str, **fields: Any) -> bytes:
    return json.dumps({"id": delivery, "action": "opened", **fields}).encode()


async def test_create_answers_the_url_and_a_secret_and_read_shows_them(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds_platform: FeedsRole
) -> None:
    ns, key = namespace
    path, secret = await create_hook(ns_client, key)
    assert path == f"/api/v1/webhooks/{ns}/t"
    assert secret.startswith("whsec_")
    read = await lifecycle(ns_client, FEED, "READ", key)
    assert read["config"]["url"].endswith(path) and read["config"]["secret"] == secret
    assert read["status"]["active"] is True
    listed = (await ns_client.get("/api/v1/namespaces/_/feeds")).json()
    assert [(f["trigger"], f["provider"]) for f in listed] == [(f"/{ns}/t", "webhook")]


@pytest.mark.parametrize("scheme", ["github", "stripe", "standard"])
async def test_a_good_signature_fires_and_the_action_sees_the_headers_without_signatures(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
    scheme: str,
) -> None:
    ns, key = namespace
    path, secret = await create_hook(ns_client, key, scheme=scheme)
    body = body_of(f"evt-{scheme}", n=1)
    headers = {
        **signed(scheme, body, secret, f"evt-{scheme}"),
        "Content-Type": "application/json",
        "X-Custom": "c",
    }
    async with httpx.AsyncClient(transport=ns_client._transport, base_url="http://squall") as anonymous:
        r = await anonymous.post(path, content=body, headers=headers)
    assert r.status_code == 202, r.text
    aid = r.json()["activationId"]
    record = await record_of(activation_store, ns, aid)
    assert record.response.result == {"id": f"evt-{scheme}", "action": "opened", "n": 1}
    assert record.subject != "", "fired as the key that registered the feed"
    run_id = json.loads(record.logs[0])["activationId"]
    run = await record_of(activation_store, ns, run_id)
    seen = run.response.result["__ow_headers"]
    assert seen["x-custom"] == "c" and seen["content-type"] == "application/json"
    for hidden in ("x-hub-signature-256", "stripe-signature", "webhook-signature", "authorization"):
        assert hidden not in seen
    assert run.response.result["n"] == 1


async def test_a_bad_or_missing_signature_is_401_and_fires_nothing(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
) -> None:
    ns, key = namespace
    path, secret = await create_hook(ns_client, key)
    body = body_of("d-bad")
    for headers in (
        signed("github", body, "whsec_" + "A" * 44, "d-bad"),  # another secret
        signed("standard", body + b" ", secret, "d-bad"),  # another body
        {"X-GitHub-Delivery": "d-bad"},  # none
    ):
        r = await ns_client.post(path, content=body, headers=headers)
        assert r.status_code == 401
        assert set(r.json()) == {"error", "code"}
    # A good delivery afterwards is the only record: the refused ones left none.
    r = await ns_client.post(path, content=body, headers=signed("github", body, secret, "d-good"))
    assert r.status_code == 202
    await record_of(activation_store, ns, r.json()["activationId"])
    assert [a.activationId for a in await trigger_records(activation_store, ns, "t")] == [
        r.json()["activationId"]
    ]


async def test_a_stale_stripe_timestamp_is_401(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds_platform: FeedsRole
) -> None:
    path, secret = await create_hook(ns_client, namespace[1], scheme="stripe")
    body = body_of("evt_stale")
    stale = signed("stripe", body, secret, "", t=int(time.time()) - 301)
    r = await ns_client.post(path, content=body, headers=stale)
    assert r.status_code == 401 and "replay" in r.json()["error"]


@pytest.mark.parametrize("scheme", ["github", "standard", "stripe"])
async def test_a_repeated_delivery_fires_once_and_answers_the_first_id(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
    scheme: str,
) -> None:
    ns, key = namespace
    path, secret = await create_hook(ns_client, key)
    body = body_of("evt_once")
    ids = set()
    for _ in range(3):
        # Re-signed each time, as senders do on a retry (a new timestamp), with the same delivery id.
        r = await ns_client.post(path, content=body, headers=signed(scheme, body, secret, "evt_once"))
        assert r.status_code == 202
        ids.add(r.json()["activationId"])
    assert len(ids) == 1
    record = await record_of(activation_store, ns, ids.pop())
    await record_of(
        activation_store, ns, json.loads(record.logs[0])["activationId"]
    )  # the rule's run is done
    assert len(await trigger_records(activation_store, ns, "t")) == 1


async def test_a_body_over_1_mb_is_413(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds_platform: FeedsRole
) -> None:
    path, secret = await create_hook(ns_client, namespace[1])
    body = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    r = await ns_client.post(path, content=body, headers=signed("github", body, secret, "big"))
    assert r.status_code == 413 and set(r.json()) == {"error", "code"}


async def test_a_paused_feed_answers_409_and_fires_nothing_until_unpaused(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
) -> None:
    ns, key = namespace
    path, secret = await create_hook(ns_client, key)
    assert await lifecycle(ns_client, FEED, "PAUSE", key) == {}
    body = body_of("p-1")
    r = await ns_client.post(path, content=body, headers=signed("github", body, secret, "p-1"))
    assert r.status_code == 409 and "not active" in r.json()["error"]
    assert await lifecycle(ns_client, FEED, "UNPAUSE", key) == {}
    r = await ns_client.post(path, content=body, headers=signed("github", body, secret, "p-1"))
    assert r.status_code == 202
    await record_of(activation_store, ns, r.json()["activationId"])
    assert len(await trigger_records(activation_store, ns, "t")) == 1


async def test_a_form_body_arrives_raw_and_unknown_or_deleted_hooks_are_404(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
) -> None:
    ns, key = namespace
    path, secret = await create_hook(ns_client, key)
    body = b"payload=%7B%7D&x=1"
    headers = {**signed("github", body, secret, "f-1"), "Content-Type": "application/x-www-form-urlencoded"}
    r = await ns_client.post(path, content=body, headers=headers)
    assert r.status_code == 202
    record = await record_of(activation_store, ns, r.json()["activationId"])
    assert record.response.result == {"__ow_body": "payload=%7B%7D&x=1"}
    assert (
        await ns_client.post(path.replace("/t", "/nope"), content=body, headers=headers)
    ).status_code == 404
    assert await lifecycle(ns_client, FEED, "DELETE", key) == {}
    assert (await ns_client.post(path, content=body, headers=headers)).status_code == 404
