"""`GET /invokers` and `GET /invokers/healthy/count`: invoker health, as OpenWhisk's controller serves it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.context import JSON, state
from api.routing import Operation, route
from broker.clock import now_ms
from broker.health import healthy_count, listing

# A listing is rare: it reads the heartbeats afresh rather than answer from the background view.
_MAX_AGE_S = 0.0


@route(
    "/invokers",
    "GET",
    Operation(
        summary=(
            'Invoker health: `{"invoker0/0": "up" | "unhealthy" | "down"}`, oldest invoker first '
            "(by rank: no host names or process ids)"
        ),
        tag="Invokers",
        response=dict[str, str],
        errors=(503,),
        auth=False,
    ),
)
async def list_invokers(request: Request) -> Response:
    beats = await state(request).gateway.registry.heartbeats(max_age_s=_MAX_AGE_S)
    return JSON(listing(beats, now_ms()))


@route(
    "/invokers/healthy/count",
    "GET",
    Operation(
        summary="The number of invokers that are up", tag="Invokers", response=int, errors=(503,), auth=False
    ),
)
async def count_healthy_invokers(request: Request) -> Response:
    beats = await state(request).gateway.registry.heartbeats(max_age_s=_MAX_AGE_S)
    return JSON(healthy_count(beats, now_ms()))


routes = [list_invokers, count_healthy_invokers]
