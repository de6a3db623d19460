"""Unauthenticated discovery documents: `GET /`, `GET /ping` and `GET /api/v1`, as OpenWhisk serves them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from api.context import JSON, state
from api.routing import ApiRoute, Operation
from broker import kinds, limits
from broker.config import Settings


def build_version() -> str:
    try:
        return version("squall")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def api_info() -> dict[str, object]:
    # `wsk property get` and client libraries read this document to discover the API.
    return {
        "description": "OpenWhisk API",
        "api_version": "1.0.0",
        "api_version_path": "v1",
        "build": build_version(),
        "buildno": build_version(),
        "swagger_paths": {"ui": "/docs", "api-docs": "/api-docs"},
    }


def system_info(settings: Settings) -> dict[str, object]:
    # Limits and runtimes come from the same catalog and settings the API enforces, so this cannot drift.
    return {
        "description": "Squall: an OpenWhisk-compatible serverless event platform",
        "support": {"github": "squall", "slack": ""},
        "api_paths": ["/api/v1"],
        "limits": limits.system_limits_document(limits.namespace_defaults(settings)),
        "runtimes": kinds.runtimes_document(),
    }


async def get_api_info(request: Request) -> Response:
    return JSON(api_info())


async def get_system_info(request: Request) -> Response:
    return JSON(system_info(state(request).settings))


async def ping(request: Request) -> Response:
    return PlainTextResponse("pong")


def _info(summary: str) -> Operation:
    return Operation(summary=summary, tag="Info", response=dict[str, object], auth=False)


routes = [
    ApiRoute("/", get_system_info, "GET", _info("System information: API paths, limits and runtimes")),
    ApiRoute(
        "/ping",
        ping,
        "GET",
        Operation(
            summary="Liveness check; answers `pong`",
            tag="Info",
            response=str,
            content_type="text/plain",
            auth=False,
        ),
    ),
    ApiRoute("/api/v1", get_api_info, "GET", _info("API version information")),
]
