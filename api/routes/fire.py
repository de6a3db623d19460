"""Firing a trigger over HTTP: `POST …/triggers/{name}`, through the one fire path (broker/firing.py).

OpenWhisk's answers (Triggers.scala): 404 for an unknown trigger, 204 without a body (and without a record)
when no rule is active, else 202 `{"activationId"}` — here as soon as the event is durably in JetStream.
An `Idempotency-Key` header (or a CloudEvent's source + id) makes a repeated fire answer the first one's id.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import read_bytes
from api.cloudevents import Incoming, read_event
from api.context import JSON, authenticated, state
from api.gateway import ACTIVATION_ID_HEADER, ActivationIdBody
from api.request_id import request_id_of
from api.routing import Operation, route
from api.trace import traceparent_of
from broker.entities import validate_name
from broker.errors import BadRequest
from broker.firing import Fire, TriggerFiring
from broker.limits import PAYLOAD_MAX_BYTES, nested_deeper_than, nesting_message
from broker.trigger_events import HOPS_EXTENSION, HOPS_HEADER, IDEMPOTENCY_HEADER

ENTITY_PATH: Final = "/api/v1/namespaces/{namespace}/triggers/{name}"
IDEMPOTENCY_KEY_MAX: Final = 256
# Request headers an action never sees in `__ow_headers`: the caller's credentials.
PRIVATE_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})


def ow_headers(request: Request) -> dict[str, str]:
    """The request's headers, lowercased, as OpenWhisk passes them to rule-fired actions (#5273)."""
    return {name: value for name, value in request.headers.items() if name not in PRIVATE_HEADERS}


def idempotency_key(request: Request, incoming: Incoming) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        if not key or len(key) > IDEMPOTENCY_KEY_MAX:
            raise BadRequest(f"The Idempotency-Key header must have 1 to {IDEMPOTENCY_KEY_MAX} characters.")
        return key
    return incoming.idempotency_key


def hop_count(request: Request, incoming: Incoming) -> int:
    """How many action-caused events led to this fire: the `Squall-Hops` header or CloudEvent extension."""
    raw: Any = request.headers.get(HOPS_HEADER)
    if raw is None and incoming.attributes is not None:
        raw = incoming.attributes.get(HOPS_EXTENSION)
    if raw is None:
        return 0
    try:
        hops = int(raw)
    except ValueError:
        hops = -1
    if hops < 0:
        raise BadRequest(f"The {HOPS_HEADER} header must be a non-negative integer.")
    return hops


@route(
    ENTITY_PATH,
    "POST",
    Operation(
        summary=(
            "Fire a trigger: 202 with the trigger activation's id once the event is stored, 204 when no rule "
            "is active. The body is the payload, or a CloudEvent (structured or binary mode); an "
            "`Idempotency-Key` header makes a repeated fire answer the first one's id"
        ),
        tag="Triggers",
        body=dict[str, Any],
        status=202,
        response=ActivationIdBody,
        other_responses={204: None},
        errors=(400, 403, 404, 409, 413, 429, 503),
    ),
)
@authenticated
async def fire_trigger(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    name = validate_name(request.path_params["name"])
    raw = await read_bytes(request, PAYLOAD_MAX_BYTES)
    incoming = read_event(request.headers, raw)
    if nested_deeper_than(incoming.payload, raw=raw):  # the trigger record holds the payload
        raise BadRequest(f"The request content was malformed:\n{nesting_message()}")
    fire = Fire(
        namespace=namespace,
        trigger=name,
        subject=identity.uuid,
        payload=incoming.payload,
        idempotency_key=idempotency_key(request, incoming),
        headers=ow_headers(request),
        cloudevent=incoming.attributes,
        hops=hop_count(request, incoming),
        transaction_id=request_id_of(request),
        traceparent=traceparent_of(request, incoming.attributes),
    )
    activation_id = await firing_of(request).fire(fire)
    if activation_id is None:
        return Response(status_code=204)
    return JSON(
        ActivationIdBody(activationId=activation_id), 202, headers={ACTIVATION_ID_HEADER: activation_id}
    )


def firing_of(request: Request) -> TriggerFiring:
    """The fire path of this app: its gateway's trigger cache and event queues, its throttles."""
    shared = state(request)
    gateway = shared.gateway
    return TriggerFiring(
        gateway.bus,
        gateway.actions,
        gateway.events,
        shared.throttles,
        max_hops=shared.settings.max_hops,
        tracing=shared.settings.trace_context,
    )


routes = [fire_trigger]
