"""`GET /api/v1/namespaces/{namespace}/feeds`: every feed of a namespace with its health (a Squall addition)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.context import JSON, authenticated, state
from api.routing import Operation, route
from broker.feed_registry import FeedHealth, FeedRegistry, FeedStatus, health_of


class FeedView(msgspec.Struct, frozen=True, kw_only=True):
    trigger: str  # "/ns/trigger"
    feed: str  # the feed action, "/whisk.system/alarms/alarm"
    provider: str
    config: dict[str, Any]
    status: FeedHealth


@route(
    "/api/v1/namespaces/{namespace}/feeds",
    "GET",
    Operation(
        summary=(
            "A Squall addition: every feed of the namespace (alarms, webhooks, NATS subjects) with its health: "
            "active or why not, last and next fire, fire count, last error"
        ),
        tag="Triggers",
        response=list[FeedView],
        errors=(400, 503),
    ),
)
@authenticated
async def list_feeds(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    registry = FeedRegistry(state(request).store.bus)
    statuses = await registry.statuses(namespace)
    views = [
        FeedView(
            trigger=f"/{reg.namespace}/{reg.trigger}",
            feed=reg.feed,
            provider=reg.provider,
            config=reg.config,
            status=health_of(reg, statuses.get((reg.namespace, reg.trigger), FeedStatus())),
        )
        for reg in await registry.list(namespace)
    ]
    return JSON(views)


routes = [list_feeds]
