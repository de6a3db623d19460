"""`GET /metrics`: Prometheus' text exposition of every role's metrics, and the backbone's queue depths."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.context import state
from api.routing import ApiRoute, Operation
from broker import metrics
from broker.backbone_metrics import backbone_families


async def get_metrics(request: Request) -> Response:
    # Unauthenticated, as Prometheus scrapes: no label names a tenant unless SQUALL_METRICS_NAMESPACES says so.
    families = await backbone_families(state(request).store.bus)
    return Response(metrics.exposition(families), media_type=metrics.CONTENT_TYPE)


routes = [
    ApiRoute(
        "/metrics",
        get_metrics,
        "GET",
        Operation(
            summary="Prometheus metrics of every role (text exposition format 0.0.4)",
            tag="Info",
            response=str,
            content_type="text/plain",
            auth=False,
        ),
    )
]
