"""Client input that used to end in a 500: each is now a 4xx in OpenWhisk's error shape (issue: tenant safety)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from broker.bus import JetStreamBus
from broker.limits import NESTING_MAX_DEPTH

TOO_DEEP_TO_DECODE = b"[" * 5000 + b"]" * 5000
OBJECTS_TOO_DEEP_TO_DECODE = b'{"a":' * 5000 + b"1" + b"}" * 5000
# Decodable, but a record holding it could not be stored in MongoDB.
DEEP_PAYLOAD = b'{"a":' * (NESTING_MAX_DEPTH + 5) + b"1" + b"}" * (NESTING_MAX_DEPTH + 5)
ROUTES = [
    ("PUT", "/api/v1/namespaces/_/actions/a"),
    ("POST", "/api/v1/namespaces/_/actions/a"),
    ("PUT", "/api/v1/namespaces/_/triggers/t"),
    ("POST", "/api/v1/namespaces/_/triggers/t"),
    ("PUT", "/api/v1/namespaces/_/rules/r"),
    ("PUT", "/api/v1/namespaces/_/packages/p"),
]


@pytest.fixture
async def gateway(app: Starlette, bus: JetStreamBus) -> AsyncIterator[InvokeGateway]:
    async with InvokeGateway(bus) as gateway:
        app_state(app).gateway = gateway
        yield gateway


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and words in body["error"]


@pytest.mark.parametrize(
    "header",
    [
        b"Basic " + base64.b64encode("é:ü".encode("latin-1")),
        "Basic éé".encode("latin-1"),
        b"Basic " + base64.b64encode(b"\xff\xfe:\x80"),
    ],
)
async def test_non_ascii_credentials_are_401(client: httpx.AsyncClient, header: bytes) -> None:
    r = await client.get("/api/v1/namespaces/_/actions", headers={"Authorization": header})  # type: ignore[dict-item]
    assert_error(r, 401, "authentication")


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("body", [TOO_DEEP_TO_DECODE, OBJECTS_TOO_DEEP_TO_DECODE])
async def test_json_nested_past_the_decoder_is_400(
    ns_client: httpx.AsyncClient, gateway: InvokeGateway, method: str, path: str, body: bytes
) -> None:
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    r = await ns_client.request(method, path, content=body)
    assert r.status_code == 400, r.text
    assert "malformed" in r.json()["error"]


async def test_payloads_nested_past_what_a_record_can_hold_are_400(
    ns_client: httpx.AsyncClient, gateway: InvokeGateway
) -> None:
    code = {"exec": {"kind": "python:default", "code": "def main(a):\n    return a\n"}}
    assert (await ns_client.put("/api/v1/namespaces/_/actions/a", json=code)).status_code == 200
    assert (await ns_client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    for path in ("/api/v1/namespaces/_/actions/a", "/api/v1/namespaces/_/triggers/t"):
        assert_error(await ns_client.post(path, content=DEEP_PAYLOAD), 400, "nested more than")


@pytest.mark.parametrize("name", ["since", "upto"])
@pytest.mark.parametrize("value", ["9" * 3000, "-" + "9" * 3000, "1e400"])
async def test_huge_time_bounds_are_400(ns_client: httpx.AsyncClient, name: str, value: str) -> None:
    r = await ns_client.get("/api/v1/namespaces/_/activations", params={name: value})
    assert_error(r, 400, "epoch")
