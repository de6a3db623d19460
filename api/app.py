"""The Starlette application: routes, middleware and error handlers, put together once."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from api.context import Services
from api.errors import EXCEPTION_HANDLERS
from api.request_id import RequestIdMiddleware
from api.routes import info, namespaces
from broker.activation_store import ActivationStore
from broker.config import Settings
from broker.entity_store import EntityStore


def create_app(settings: Settings, store: EntityStore, activations: ActivationStore) -> Starlette:
    app = Starlette(
        routes=[*info.routes, *namespaces.routes],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.services = Services(settings=settings, store=store, activations=activations)
    return app
