"""The OpenAPI 3.1 document, generated from the routes' `Operation`s so it can never drift from the code."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.convertors import Convertor, FloatConvertor, IntegerConvertor, PathConvertor, UUIDConvertor
from starlette.routing import BaseRoute

from api.context import app_state
from api.routing import ApiRoute, Operation, Param

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "basicAuth"
ERROR_SCHEMA = "Error"
REQUEST_ID = "X-Request-ID"
JSON_MEDIA = "application/json"

_REF = "#/components/schemas/{name}"

# Statuses every operation of a kind can answer, whatever its author listed, because the shared
# machinery raises them: the error middleware (500), authentication (401), `Identity.resolve` on a
# `{namespace}` segment (403), `read_json` on a body (400 malformed, 413 too large), query parsing (400),
# the middleware refusing control characters in a path parameter (400), Starlette's router when a
# path segment holds a `/` or is empty (404), and the entity store when the `{name}` belongs to another
# collection (409).
ALWAYS = (500,)

_REASONS = {
    400: "Bad request: malformed body, invalid name or parameter",
    401: "Missing or invalid credentials",
    403: "The key may not access this namespace",
    404: "The resource does not exist",
    405: "Method not allowed",
    406: "Not acceptable: the web action extension is not supported",
    409: "Conflict: the resource exists, or was modified concurrently",
    413: "The request or one of its fields is too large",
    429: "Throttled",
    500: "Internal error",
    502: "The action failed",
    503: "A backbone service is unavailable",
}

_ERROR_SCHEMA = {
    "type": "object",
    "description": "OpenWhisk's error shape; `code` is the transaction id, not the HTTP status.",
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    "required": ["error", "code"],
}

_REQUEST_ID_HEADER = {
    "description": "The transaction id of the request",
    "required": True,
    "schema": {"type": "string"},
}


def _schema_hook(type_: type) -> dict[str, Any]:
    # msgspec has no schema for a bare `object` (used as "any JSON value"); an empty schema accepts all,
    # but msgspec refuses an empty hook result, so say it with a description.
    if type_ is object:
        return {"description": "Any JSON value"}
    raise NotImplementedError


def path_param_type(convertor: Convertor[Any]) -> dict[str, Any]:
    """The JSON schema of a path segment, from the Starlette convertor that parses it."""
    if isinstance(convertor, IntegerConvertor):
        return {"type": "integer", "minimum": 0}
    if isinstance(convertor, FloatConvertor):
        return {"type": "number", "minimum": 0}
    if isinstance(convertor, UUIDConvertor):
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


def query_param(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type}
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    if param.enum is not None:
        schema["enum"] = list(param.enum)
    out: dict[str, Any] = {"name": param.name, "in": "query", "required": param.required, "schema": schema}
    if param.description:
        out["description"] = param.description
    return out


def error_statuses(route: ApiRoute) -> list[int]:
    """Every non-2xx status the route can answer: its own list plus what the shared machinery adds."""
    op = route.operation
    statuses = set(op.errors) | set(ALWAYS)
    if op.auth:
        statuses.add(401)
        if "namespace" in route.param_convertors:
            statuses.add(403)
    if op.body is not None:
        statuses |= {400, 413}
    if route.param_convertors or any(p.type != "string" or p.enum for p in op.query):
        statuses.add(400)
    if any(not isinstance(c, PathConvertor) for c in route.param_convertors.values()):
        statuses.add(404)
    if "name" in route.param_convertors:
        statuses.add(409)
    return sorted(statuses)


class _Schemas:
    """Collects every type the operations mention, then turns them into schemas in one msgspec pass."""

    def __init__(self) -> None:
        self._types: list[Any] = []
        self._resolved: list[dict[str, Any]] = []
        self.components: dict[str, Any] = {}

    def ref(self, type_: Any) -> int:
        self._types.append(type_)
        return len(self._types) - 1

    def resolve(self) -> None:
        schemas, self.components = msgspec.json.schema_components(
            self._types, schema_hook=_schema_hook, ref_template=_REF
        )
        self._resolved = list(schemas)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._resolved[index]


def _content(schemas: _Schemas, type_: Any, media_type: str = JSON_MEDIA) -> dict[str, Any] | None:
    # `None` means "no body" (e.g. 204, or the rule status change's empty 200).
    return None if type_ is None else {media_type: {"schema": schemas.ref(type_)}}


def _operation(route: ApiRoute, schemas: _Schemas, operation_id: str) -> dict[str, Any]:
    op: Operation = route.operation
    params = [
        {"name": name, "in": "path", "required": True, "schema": path_param_type(conv)}
        | (
            {"description": "May contain `/` (e.g. `package/name`)"}
            if isinstance(conv, PathConvertor)
            else {}
        )
        for name, conv in route.param_convertors.items()
    ]
    params += [query_param(p) for p in op.query]
    successes = {op.status: op.response, **op.other_responses}
    responses: dict[str, Any] = {}
    for status, type_ in sorted(successes.items()):
        response: dict[str, Any] = {"description": op.summary, "headers": {REQUEST_ID: _REQUEST_ID_HEADER}}
        content = _content(schemas, type_, op.content_type)
        if content is not None:
            response["content"] = content
        responses[str(status)] = response
    for status in error_statuses(route):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    out: dict[str, Any] = {
        "operationId": operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
        "security": [{SECURITY_SCHEME: []}] if op.auth else [],
    }
    if op.body is not None:
        body = _content(schemas, op.body)
        out["requestBody"] = {"required": op.body_required, "content": body}
    return out


def _error_response(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {REQUEST_ID: _REQUEST_ID_HEADER}
    if status == 401:
        headers["WWW-Authenticate"] = {"required": True, "schema": {"type": "string"}}
    return {
        "description": _REASONS.get(status, f"Error {status}"),
        "headers": headers,
        "content": {JSON_MEDIA: {"schema": {"$ref": _REF.format(name=ERROR_SCHEMA)}}},
    }


def _operation_ids(routes: list[ApiRoute]) -> list[str]:
    # Handler names read best; a name two handlers share falls back to a name built from method and path.
    names = [getattr(r.endpoint, "__name__", "") for r in routes]
    return [
        name
        if name and name != "<lambda>" and names.count(name) == 1
        else f"{route.method.lower()}_{_words(route.path_format)}"
        for route, name in zip(routes, names, strict=True)
    ]


def _words(path: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in path).split())


def build_document(routes: Iterable[BaseRoute], *, version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI document of the `ApiRoute`s among `routes` (others cannot be described, and are left out)."""
    api_routes = [r for r in routes if isinstance(r, ApiRoute)]
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for route, operation_id in zip(api_routes, _operation_ids(api_routes), strict=True):
        paths.setdefault(route.path_format, {})[route.method.lower()] = _operation(
            route, schemas, operation_id
        )
        if route.operation.tag not in tags:
            tags.append(route.operation.tag)
    schemas.resolve()
    _fill_schemas(paths, schemas)
    _link_entities(paths)
    statuses = sorted({int(s) for item in paths.values() for op in item.values() for s in op["responses"]})
    components = dict(schemas.components)
    components[ERROR_SCHEMA] = _ERROR_SCHEMA
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Squall: OpenWhisk-compatible REST API",
            "version": version,
            "description": "Generated from the server's routes. Errors are `{error, code}` with `code` "
            "the transaction id; `_` as a namespace means the caller's own.",
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {str(s): _error_response(s) for s in statuses if s >= 400},
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "basic"}},
        },
    }


# The entity collections whose PUT creates what the path's other operations then read, update, fire or delete.
_ENTITY_PATH = re.compile(r"^/api/v1/namespaces/\{namespace\}/(actions|triggers|rules|packages)/\{[a-z]+\}$")


def _link_entities(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links from each entity's create (PUT, 200) to the operations on the same path, fed with the same
    path parameters: what a client does next (get, update, invoke/fire/enable, delete), and what stateful
    fuzzers (schemathesis) follow to reach past the 404s of made-up names."""
    for path, item in paths.items():
        create = item.get("put")
        if create is None or not _ENTITY_PATH.match(path) or "200" not in create["responses"]:
            continue
        names = [p["name"] for p in create["parameters"] if p["in"] == "path"]
        create["responses"]["200"]["links"] = {
            f"{method.upper()} {op['operationId']}": {
                "operationId": op["operationId"],
                "parameters": {f"path.{n}": f"$request.path.{n}" for n in names},
            }
            for method, op in item.items()
        }


def _fill_schemas(paths: dict[str, dict[str, Any]], schemas: _Schemas) -> None:
    """Replace the placeholders `_content` left (indexes into `schemas`) with the generated schemas."""
    for item in paths.values():
        for op in item.values():
            contents = [r["content"] for r in op["responses"].values() if "content" in r]
            if "requestBody" in op:
                contents.append(op["requestBody"]["content"])
            for media in (m for content in contents for m in content.values()):
                if isinstance(media["schema"], int):
                    media["schema"] = schemas[media["schema"]]


def openapi_document(app: Starlette) -> bytes:
    """The app's document as JSON, built on first use and kept: the routes do not change while it runs."""
    shared = app_state(app)
    if shared.openapi_document is None:
        shared.openapi_document = msgspec.json.encode(build_document(app.routes))
    return shared.openapi_document
