"""`GET /invokers` and `GET /invokers/healthy/count`: invoker health, as OpenWhisk's controller serves it; and
`GET /invokers/pools` (a Squall addition, for the console): each invoker's pool, for a caller with a key."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.context import JSON, authenticated, state
from api.routing import Operation, route
from broker.clock import now_ms
from broker.health import Heartbeat, healthy_count, invoker_state, listing, ordered

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


class InvokerPool(msgspec.Struct, frozen=True, kw_only=True):
    """One invoker's pool as its last heartbeat told it, named by rank like `GET /invokers` names it."""

    invoker: str  # "invoker0/0"
    state: str  # "up" | "unhealthy" | "down"
    capacityMB: int  # memory the pool may give to containers
    freeMB: int
    warm: int  # containers kept warm (idle or busy) and stem cells
    inFlight: int
    completed: int  # invocations finished since the invoker started
    systemErrors: int  # of its last ten activations
    families: list[str]  # the runtime families it runs
    started: int  # epoch ms
    lastSeen: int  # epoch ms of the last heartbeat


def pools(beats: Iterable[Heartbeat], now: int) -> list[InvokerPool]:
    """The pools of every known invoker, oldest first; ids (host names, pids) stay out as in `listing`."""
    return [
        InvokerPool(
            invoker=f"invoker{i}/{i}",
            state=invoker_state(b, now),
            capacityMB=b.capacity_mb,
            freeMB=b.free_mb,
            warm=b.warm,
            inFlight=b.in_flight,
            completed=b.completed,
            systemErrors=b.system_errors,
            families=list(b.families),
            started=b.started,
            lastSeen=b.at,
        )
        for i, b in enumerate(ordered(beats))
    ]


@route(
    "/invokers/pools",
    "GET",
    Operation(
        summary=(
            "A Squall addition: each invoker's state and pool (memory, warm containers, work in flight), "
            "oldest invoker first, named as `GET /invokers` names them"
        ),
        tag="Invokers",
        response=list[InvokerPool],
        errors=(503,),
    ),
)
@authenticated
async def list_invoker_pools(request: Request, identity: Identity) -> Response:
    beats = await state(request).gateway.registry.heartbeats(max_age_s=_MAX_AGE_S)
    return JSON(pools(beats, now_ms()))


routes = [list_invokers, count_healthy_invokers, list_invoker_pools]
