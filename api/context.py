"""What every request handler can reach: the settings, the stores, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity, authenticate
from broker import codec
from broker.activation_store import ActivationStore
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.namespaces import AuthKey


class KeyLookup(Protocol):
    async def find_key(self, uuid: str) -> AuthKey | None: ...


class Services(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings
    store: EntityStore
    activations: ActivationStore
    keys: KeyLookup  # the store itself, or a cache in front of it


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


class JSON(Response):
    """A JSON response encoded by the one codec (msgspec), which also takes Structs directly."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return codec.encode(content)


AuthedHandler = Callable[[Request, Identity], Awaitable[Response]]


def authenticated(handler: AuthedHandler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler so it runs only for a valid key, and receives the caller's identity."""

    @wraps(handler)
    async def endpoint(request: Request) -> Response:
        identity = await authenticate(request, services(request).keys)
        return await handler(request, identity)

    return endpoint
