"""`GET /api/v1/namespaces`: the namespaces the caller's key may use."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.context import JSON, authenticated
from api.routing import Operation, route


@route(
    "/api/v1/namespaces",
    "GET",
    Operation(summary="List the namespaces the caller's key may use", tag="Namespaces", response=list[str]),
)
@authenticated
async def list_namespaces(request: Request, identity: Identity) -> Response:
    # A key belongs to exactly one namespace, so that is the list (OpenWhisk answers the same way).
    return JSON([identity.namespace])


routes = [list_namespaces]
