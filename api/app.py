"""The Starlette application: routes, middleware and error handlers, put together once."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from api.context import AppState, KeyLookup
from api.errors import EXCEPTION_HANDLERS
from api.gateway import InvokeGateway
from api.middleware import RequestIdMiddleware
from api.routes import (
    actions,
    activation_stream,
    activations,
    console,
    deadletters,
    feeds,
    fire,
    info,
    invoke,
    invokers,
    metrics,
    namespaces,
    openapi,
    packages,
    rules,
    triggers,
    web,
    webhooks,
)
from api.stream_hub import StreamHub
from api.throttling import UNTHROTTLED, Throttling
from broker.activation_store import ActivationStore
from broker.config import Settings
from broker.entity_store import EntityStore

ROUTES: list[BaseRoute] = [
    *info.routes,
    *metrics.routes,
    *namespaces.routes,
    *actions.routes,
    *invoke.routes,
    *invokers.routes,
    *packages.routes,
    *triggers.routes,
    *fire.routes,
    *feeds.routes,
    *webhooks.routes,
    *rules.routes,
    *activation_stream.routes,  # before `…/activations/{id}`, which would take `stream` for an id
    *activations.routes,
    *deadletters.routes,
    *web.routes,
    *openapi.routes,
    *console.routes,
]


def create_app(
    settings: Settings,
    store: EntityStore,
    activations: ActivationStore,
    keys: KeyLookup | None = None,
    *,
    gateway: InvokeGateway | None = None,
    throttles: Throttling = UNTHROTTLED,
) -> Starlette:
    """The app; `keys` puts a cache (broker.key_cache.KeyCache) in front of the store's key lookups. Without a
    `gateway` (one can be attached later, `app_state(app).gateway = …`) invoking and firing answer 503."""
    app = Starlette(
        routes=list(ROUTES),
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    # OpenWhisk answers `…/triggers/` itself; a 307 to `…/triggers` would turn a PUT into a 405.
    app.router.redirect_slashes = False
    shared = AppState(
        settings=settings,
        store=store,
        activations=activations,
        keys=keys or store,
        throttles=throttles,
        streams=StreamHub(settings.streams_per_namespace),
    )
    if gateway is not None:
        shared.gateway = gateway
    app.state.squall = shared
    return app
