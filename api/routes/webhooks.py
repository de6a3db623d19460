"""Webhook ingress: `POST /api/v1/webhooks/{namespace}/{trigger}`, the URL a webhook feed's CREATE answered.

No OpenWhisk credentials: the sender proves itself by signing the body with the feed's secret (GitHub, Stripe or
Standard Webhooks scheme, broker/webhook_signatures.py). A verified delivery fires the trigger through the one
fire path as the key that registered the feed (throttled and recorded as any fire); its delivery id is the
idempotency key, so a repeated delivery fires once and answers the first activation id.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.body import read_bytes
from api.context import JSON, state
from api.gateway import ACTIVATION_ID_HEADER, ActivationIdBody
from api.request_id import request_id_of
from api.routes.fire import firing_of
from api.routing import Operation, route
from api.trace import traceparent_of
from broker import metrics
from broker.entities import validate_name
from broker.errors import Conflict, NotFound, SquallError
from broker.feed_registry import FeedRegistry
from broker.firing import Fire
from broker.trigger_events import fire_id
from broker.webhook_deliveries import WebhookDeliveries
from broker.webhook_signatures import verify
from broker.webhooks import (
    BODY_MAX_BYTES,
    PROVIDER,
    WEBHOOK_ROUTE,
    WebhookConfig,
    forwarded_headers,
    webhook_payload,
)


@route(
    WEBHOOK_ROUTE,
    "POST",
    Operation(
        summary=(
            "A Squall addition: deliver a webhook to a trigger with a webhook feed. No credentials: the body is "
            "signed with the feed's secret (X-Hub-Signature-256, Stripe-Signature or Standard Webhooks' "
            "webhook-id/-timestamp/-signature). 202 with the trigger activation's id, 204 when no rule is "
            "active; a repeated delivery id answers the first fire's id and fires nothing"
        ),
        tag="Webhooks",
        body=dict[str, Any],
        status=202,
        response=ActivationIdBody,
        other_responses={204: None},
        errors=(400, 401, 404, 409, 413, 429, 503),
        auth=False,
    ),
)
async def deliver_webhook(request: Request) -> Response:
    namespace = validate_name(request.path_params["namespace"], "namespace")
    trigger = validate_name(request.path_params["trigger"])
    body = await read_bytes(request, BODY_MAX_BYTES)  # 413 before any lookup
    bus = state(request).store.bus
    registration, _ = await FeedRegistry(bus).get(namespace, trigger)
    if registration.provider != PROVIDER:
        raise NotFound()
    config = WebhookConfig(**registration.config)
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        verified = verify(
            headers, body, config.secret, time.time(), scheme=config.scheme
        )  # 401 unless it holds
    except SquallError:
        metrics.current().webhook_verifications_failed().inc()
        raise
    if not registration.active:
        why = registration.reason.message if registration.reason is not None else "disabled"
        raise Conflict(f"The trigger's webhook feed is not active: {why}")
    key = verified.delivery_id
    deliveries = WebhookDeliveries(bus)
    if key is not None and await deliveries.seen(namespace, trigger, key):
        return _accepted(fire_id(namespace, trigger, key))
    fire = Fire(
        namespace=namespace,
        trigger=trigger,
        subject=registration.subject,
        payload=webhook_payload(request.headers.get("content-type"), body),
        idempotency_key=key,
        headers=forwarded_headers(headers),
        transaction_id=request_id_of(request),
        traceparent=traceparent_of(request),
    )
    activation_id = await firing_of(request).fire(fire)
    if activation_id is None:
        return Response(status_code=204)
    if key is not None:
        await deliveries.remember(namespace, trigger, key)
    metrics.current().feed_fires("webhook").inc()
    return _accepted(activation_id)


def _accepted(activation_id: str) -> Response:
    return JSON(
        ActivationIdBody(activationId=activation_id), 202, headers={ACTIVATION_ID_HEADER: activation_id}
    )


routes = [deliver_webhook]
