"""The served OpenAPI document: valid OpenAPI 3.1, and a description of every route the app really has."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Route

from api.openapi import JSON_MEDIA, SECURITY_SCHEME, openapi_document
from api.routing import ApiRoute


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/v1/api-docs")  # no credentials: the document is public
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    body: dict[str, Any] = r.json()
    return body


def _routes(app: Starlette) -> list[ApiRoute]:
    return [r for r in app.routes if isinstance(r, ApiRoute)]


def _resolve(document: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj:
        node: Any = document
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def test_every_route_of_the_app_is_an_api_route_with_an_operation(app: Starlette) -> None:
    # A plain Route could not be described, so the document would silently miss it.
    plain = [r.path for r in app.routes if isinstance(r, Route) and not isinstance(r, ApiRoute)]
    assert plain == []
    assert all(r.operation.summary and r.operation.tag for r in _routes(app))


async def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any structural error, including dangling $refs


async def test_every_route_is_documented_with_its_parameters(
    app: Starlette, document: dict[str, Any]
) -> None:
    routes = _routes(app)
    assert len(routes) >= 5  # info, ping, api info, namespaces, api-docs at the least
    for route in routes:
        op = document["paths"][route.path_format][route.method.lower()]
        params = {(p["in"], p["name"]): p for p in op["parameters"]}
        for name in route.param_convertors:
            assert params[("path", name)]["required"] is True, (route.path, name)
        for query in route.operation.query:
            schema = params[("query", query.name)]["schema"]
            assert schema["type"] == query.type, (route.path, query.name)
        expected = len(route.param_convertors) + len(route.operation.query)
        assert len(params) == expected, (route.path, route.method, sorted(params))


async def test_no_operation_is_documented_that_the_app_does_not_serve(
    app: Starlette, document: dict[str, Any]
) -> None:
    served = {(r.path_format, r.method.lower()) for r in _routes(app)}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served


async def test_bodies_and_successes_are_documented(app: Starlette, document: dict[str, Any]) -> None:
    for route in _routes(app):
        op_doc = document["paths"][route.path_format][route.method.lower()]
        operation = route.operation
        if operation.body is None:
            assert "requestBody" not in op_doc, route.path
        else:
            body = op_doc["requestBody"]
            assert body["required"] is operation.body_required
            assert "schema" in body["content"][JSON_MEDIA]
        for status, type_ in {operation.status: operation.response, **operation.other_responses}.items():
            response = op_doc["responses"][str(status)]
            assert ("content" in response) is (type_ is not None), (route.path, status)
            if type_ is not None:
                assert list(response["content"]) == [operation.content_type], (route.path, status)


async def test_error_responses_are_listed_with_the_error_shape(
    app: Starlette, document: dict[str, Any]
) -> None:
    error_schema = document["components"]["schemas"]["Error"]
    assert error_schema["required"] == ["error", "code"]
    for route in _routes(app):
        operation = route.operation
        responses = document["paths"][route.path_format][route.method.lower()]["responses"]
        expected = {*operation.errors, 500} | ({401} if operation.auth else set())
        missing = {s for s in expected if str(s) not in responses}
        assert not missing, (route.method, route.path, missing)
        for status in expected:
            response = _resolve(document, responses[str(status)])
            schema = response["content"][JSON_MEDIA]["schema"]
            assert _resolve(document, schema) == error_schema
            assert "X-Request-ID" in response["headers"]


async def test_authenticated_operations_require_basic_auth(app: Starlette, document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
    assert scheme == {"type": "http", "scheme": "basic"}
    for route in _routes(app):
        op = document["paths"][route.path_format][route.method.lower()]
        assert op["security"] == ([{SECURITY_SCHEME: []}] if route.operation.auth else [])
    assert document["paths"]["/api/v1/api-docs"]["get"]["security"] == []


async def test_unauthenticated_answer_matches_the_documented_401(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    r = await client.get("/api/v1/namespaces")
    assert r.status_code == 401
    response = _resolve(document, document["paths"]["/api/v1/namespaces"]["get"]["responses"]["401"])
    for header in response["headers"]:
        assert header.lower() in r.headers
    assert set(r.json()) == {"error", "code"}


async def test_every_authenticated_route_refuses_a_caller_without_credentials(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    # Complements the document: what it declares as authenticated really is.
    for route in _routes(app):
        if not route.operation.auth:
            continue
        values = {name: "_" if name == "namespace" else "x" for name in route.param_convertors}
        r = await client.request(route.method, route.path_format.format(**values), json={})
        assert r.status_code == 401, (route.method, route.path, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Basic")


async def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_document_is_built_once_per_app(app: Starlette) -> None:
    first = openapi_document(app)
    assert openapi_document(app) is first
