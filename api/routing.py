"""Routes that carry their own API description, so the OpenAPI document is generated, never hand-kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Param(msgspec.Struct, frozen=True, kw_only=True):
    """A query parameter as OpenAPI describes it."""

    name: str
    type: str = "string"  # "string" | "integer" | "boolean"
    description: str = ""
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """What one (path, method) does: its query parameters, body and responses, for the OpenAPI document.

    `body` and `response` are types msgspec can describe (Structs, lists, dicts, Any). `errors` lists
    the non-2xx statuses the operation can answer beyond 401/500, which every authenticated one can.
    """

    summary: str
    tag: str
    query: tuple[Param, ...] = ()
    body: Any = None
    body_required: bool = False
    response: Any = None
    content_type: str = "application/json"  # of a successful response
    status: int = 200
    other_responses: dict[int, Any] = {}
    errors: tuple[int, ...] = ()
    auth: bool = True


class ApiRoute(Route):
    """A Starlette route for one method, with its `Operation` attached."""

    def __init__(
        self, path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str, operation: Operation
    ) -> None:
        super().__init__(path, endpoint, methods=[method], name=f"{method.lower()} {path}")
        self.method = method
        self.operation = operation


def route(
    path: str, method: str, operation: Operation
) -> Callable[[Callable[[Request], Awaitable[Response]]], ApiRoute]:
    """Decorator form: `@route("/api/v1/namespaces", "GET", Operation(...))` turns a handler into a route."""

    def wrap(endpoint: Callable[[Request], Awaitable[Response]]) -> ApiRoute:
        return ApiRoute(path, endpoint, method, operation)

    return wrap
