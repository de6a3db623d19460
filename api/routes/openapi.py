"""`GET /api/v1/api-docs`: the OpenAPI document of this server, generated from its routes (no auth)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.openapi import openapi_document
from api.routing import Operation, route


@route(
    "/api/v1/api-docs",
    "GET",
    Operation(
        summary="The OpenAPI 3.1 document of this API, generated from its routes",
        tag="Info",
        response=dict[str, Any],
        auth=False,
    ),
)
async def get_api_docs(request: Request) -> Response:
    # Clients such as `wsk` discover it through `swagger_paths` in `GET /api/v1`.
    return Response(openapi_document(request.app), media_type="application/json")


routes = [get_api_docs]
