"""What every request handler can reach: the app's state (settings, stores, gateway, throttles) and the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity, authenticate
from api.gateway import InvokeGateway
from api.stream_hub import StreamHub
from api.throttling import UNTHROTTLED, Throttling
from broker import codec
from broker.activation_store import ActivationStore
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import Unavailable
from broker.namespaces import AuthKey


class KeyLookup(Protocol):
    async def find_key(self, uuid: str) -> AuthKey | None: ...


@dataclass(slots=True, kw_only=True)
class AppState:
    """Everything the routes of one app share, set by `create_app`. Not frozen: the gateway is attached once
    it runs, and the OpenAPI document is built on first request."""

    settings: Settings
    store: EntityStore
    activations: ActivationStore
    keys: KeyLookup  # the store itself, or a cache in front of it
    throttles: Throttling = UNTHROTTLED  # an app given none throttles nothing
    openapi_document: bytes | None = None  # the routes do not change while the app runs
    streams: StreamHub = field(default_factory=lambda: StreamHub(20))  # open activation streams
    _gateway: InvokeGateway | None = field(default=None, init=False)

    @property
    def gateway(self) -> InvokeGateway:
        """The invoke gateway: without one (not attached yet, or an app that has none) invoking is a 503."""
        if self._gateway is None:
            raise Unavailable()
        return self._gateway

    @gateway.setter
    def gateway(self, gateway: InvokeGateway) -> None:
        self._gateway = gateway


def app_state(app: Starlette) -> AppState:
    """The state `create_app` gave `app`, for code that holds the app rather than a request (tests, the
    OpenAPI cache); handlers use `state(request)`."""
    found: AppState = app.state.squall
    return found


def state(request: Request) -> AppState:
    """The state of the app serving `request`."""
    return app_state(request.app)


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
        identity = await authenticate(request, state(request).keys)
        return await handler(request, identity)

    return endpoint
