"""`GET /api/v1/namespaces` (the caller's namespaces), `…/{namespace}/limits` and its queue (`…/{namespace}/queue`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.context import JSON, authenticated, state
from api.routing import Operation, route
from broker.errors import NotFound
from broker.limits import EffectiveLimits, effective_limits, namespace_defaults
from broker.namespaces import NamespaceLimits
from broker.queues import Backlog

TAG = "Namespaces"


@route(
    "/api/v1/namespaces",
    "GET",
    Operation(summary="List the namespaces the caller's key may use", tag=TAG, response=list[str]),
)
@authenticated
async def list_namespaces(request: Request, identity: Identity) -> Response:
    # A key belongs to exactly one namespace, so that is the list (OpenWhisk answers the same way).
    return JSON([identity.namespace])


@route(
    "/api/v1/namespaces/{namespace}/limits",
    "GET",
    Operation(
        summary="The limits of a namespace: its own overrides, the system defaults elsewhere",
        tag=TAG,
        response=EffectiveLimits,
        errors=(400,),  # a namespace segment the request layer refuses (e.g. control characters)
    ),
)
@authenticated
async def get_limits(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    shared = state(request)
    try:
        overrides = (await shared.store.get_namespace(namespace)).limits
    except NotFound:
        # A key whose namespace record is missing (e.g. imported by hand) still gets the system limits.
        overrides = NamespaceLimits()
    return JSON(effective_limits(overrides, namespace_defaults(shared.settings)))


@route(
    "/api/v1/namespaces/{namespace}/queue",
    "GET",
    Operation(
        summary=(
            "A Squall addition: the namespace's runs waiting for its capacity (`queued`) and taken by invokers "
            "(`running`); event-driven runs over its limits wait here instead of being refused"
        ),
        tag=TAG,
        response=Backlog,
        errors=(400, 503),
    ),
)
@authenticated
async def get_queue(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    return JSON(await state(request).gateway.queues.backlog(namespace))


routes = [list_namespaces, get_limits, get_queue]
