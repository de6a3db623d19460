"""The first API surface against a real JetStream-backed entity store: info, namespaces, auth, error shape."""

from __future__ import annotations

import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from broker.admin import create_namespace, ensure_namespace
from broker.config import GUEST_KEY
from broker.entity_store import EntityStore
from tests.integration.conftest import basic


@pytest.fixture
def app(app: Starlette) -> Starlette:
    async def crash(request: object) -> None:
        raise RuntimeError("boom")

    app.router.routes.append(Route("/api/v1/crash", crash))
    return app


async def test_api_info_needs_no_auth(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1")
    assert r.status_code == 200
    body = r.json()
    assert body["api_version_path"] == "v1"
    assert body["api_version"] == "1.0.0"
    assert body["swagger_paths"] == {"ui": "/docs", "api-docs": "/api-docs"}
    assert len(r.headers["x-request-id"]) == 32


async def test_namespaces_lists_the_callers_namespace(client: httpx.AsyncClient, store: EntityStore) -> None:
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    key = await create_namespace(store, ns)
    r = await client.get("/api/v1/namespaces", headers=basic(key))
    assert r.status_code == 200
    assert r.json() == [ns]


async def test_guest_key_is_accepted_after_ensure(client: httpx.AsyncClient, store: EntityStore) -> None:
    assert await ensure_namespace(store, "guest", GUEST_KEY) in (True, False)
    assert await ensure_namespace(store, "guest", GUEST_KEY) is False  # idempotent
    r = await client.get("/api/v1/namespaces", headers=basic(GUEST_KEY))
    assert r.json() == ["guest"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!notbase64"},
        basic("not-a-uuid:secret"),
        basic(f"{uuid.uuid4()}:unknownsecret"),
        basic(GUEST_KEY.split(":")[0] + ":wrongsecret"),
    ],
)
async def test_bad_credentials_are_401_in_openwhisk_shape(
    client: httpx.AsyncClient, store: EntityStore, headers: dict[str, str]
) -> None:
    await ensure_namespace(store, "guest", GUEST_KEY)
    r = await client.get("/api/v1/namespaces", headers=headers)
    assert r.status_code == 401
    body = r.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == r.headers["x-request-id"]
    assert r.headers["www-authenticate"] == 'Basic realm="OpenWhisk secure realm"'


async def test_rotated_key_replaces_the_old_one(client: httpx.AsyncClient, store: EntityStore) -> None:
    from broker.admin import rotate_key

    ns = f"ns-{uuid.uuid4().hex[:8]}"
    old = await create_namespace(store, ns)
    new = await rotate_key(store, ns)
    assert new != old
    assert (await client.get("/api/v1/namespaces", headers=basic(new))).status_code == 200
    assert (await client.get("/api/v1/namespaces", headers=basic(old))).status_code == 401


async def test_unknown_route_is_404_in_openwhisk_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"] == "The requested resource does not exist."
    assert r.json()["code"] == r.headers["x-request-id"]


async def test_a_crash_is_a_500_without_a_traceback(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/crash")
    assert r.status_code == 500
    assert r.json()["error"] == "An internal error occurred."
    assert "boom" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] == r.json()["code"]


async def test_caller_request_id_is_kept(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/api/v1", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


async def test_a_path_with_control_characters_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/namespaces/_/actions/a%0A")
    assert r.status_code == 400
    assert "control characters" in r.json()["error"]
    assert r.json()["code"] == r.headers["x-request-id"]


async def test_cors_is_on_and_options_answers_200(client: httpx.AsyncClient) -> None:
    r = await client.options(
        "/api/v1/namespaces/_/actions/anything", headers={"Origin": "http://example.test"}
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "PUT" in r.headers["access-control-allow-methods"]
    assert "Authorization" in r.headers["access-control-allow-headers"]
    assert r.headers["x-request-id"]
    r = await client.get("/api/v1/namespaces")
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == "*"
