"""The trace context a request brings (W3C `traceparent`, or a CloudEvent's), or the one it is given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from api.context import state
from broker import trace_context


def traceparent_of(request: Request, attributes: Mapping[str, Any] | None = None) -> str:
    """The caller's trace (header first, then a CloudEvent's distributed-tracing attribute), else a new one;
    "" when trace context is switched off."""
    if not state(request).settings.trace_context:
        return ""
    header = request.headers.get(trace_context.TRACEPARENT_HEADER)
    if header is None and attributes is not None:
        value = attributes.get(trace_context.TRACEPARENT_HEADER)
        header = value if isinstance(value, str) else None
    return trace_context.accept(header)
