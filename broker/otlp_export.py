"""Activation records exported as OpenTelemetry spans over OTLP/HTTP when `SQUALL_OTLP_ENDPOINT` is set.

Every record with a trace (`traceId` annotation) becomes one span: a trigger's fire (API → engine), a rule's run or
a direct invoke (engine → invoker → container), with a child span for a cold start's `/init`. A record's span id is
drawn from its activation id and its parent is the record it was caused by (`cause`: the trigger fire of a rule's run,
the sequence of a component), so a trace shows everything one fire or invoke caused. The exporter reads ACTIVATIONS
with its own durable consumer (new records only): it never slows the recorder, and a collector that is down delays
spans, never records. The OpenTelemetry SDK is imported only when an endpoint is configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from types import TracebackType
from typing import Any, Final

import msgspec

from broker import subjects
from broker.activations import SUCCESS, Activation, annotation
from broker.bus import JetStreamBus
from broker.errors import Unavailable
from broker.stream_worker import Delivery, StreamWorker
from broker.topology import ConsumerSpec
from broker.trace_context import TRACE_ID_ANNOTATION

log = logging.getLogger("squall.otlp")

EXPORTER: Final = "otlp-export"
MS: Final = 1_000_000  # nanoseconds


class SpanPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One span to export, in plain values (pure; turned into the SDK's spans at the edge)."""

    name: str
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_id: str | None  # 16 hex
    start_ns: int
    end_ns: int
    ok: bool
    attributes: dict[str, str | int | bool]


def span_id_of(activation_id: str, part: str = "") -> str:
    """A record's span id: its activation id's first 16 hex digits (part "" ), or one drawn from it (e.g. init)."""
    if not part:
        return activation_id[:16]
    return hashlib.sha256(f"{activation_id}\x1f{part}".encode()).hexdigest()[:16]


def spans_of(record: Activation) -> list[SpanPlan]:
    """The spans of one record: none without a trace; the run, and its `/init` when it was a cold start."""
    trace = annotation(record, TRACE_ID_ANNOTATION)
    if not isinstance(trace, str) or len(trace) != 32:
        return []
    path = annotation(record, "path") or f"{record.namespace}/{record.name}"
    kind = annotation(record, "kind")
    attributes: dict[str, str | int | bool] = {
        "squall.namespace": record.namespace,
        "squall.activation_id": record.activationId,
        "squall.status": record.response.status,
        "squall.kind": kind if isinstance(kind, str) else "trigger",
    }
    wait = annotation(record, "waitTime")
    if isinstance(wait, int):
        attributes["squall.wait_ms"] = wait
    start = record.start * MS
    end = max(record.end, record.start) * MS
    own = span_id_of(record.activationId)
    spans = [
        SpanPlan(
            name=f"{'fire' if kind is None else 'run'} {path}",
            trace_id=trace,
            span_id=own,
            parent_id=span_id_of(record.cause) if record.cause else None,
            start_ns=start,
            end_ns=end,
            ok=record.response.status == SUCCESS,
            attributes=attributes,
        )
    ]
    init = annotation(record, "initTime")
    if isinstance(init, int) and init >= 0:
        spans.append(
            SpanPlan(
                name=f"init {path}",
                trace_id=trace,
                span_id=span_id_of(record.activationId, "init"),
                parent_id=own,
                start_ns=start,
                end_ns=start + init * MS,
                ok=True,
                attributes={"squall.activation_id": record.activationId},
            )
        )
    return spans


class OtlpExporter:
    """`async with OtlpExporter(bus, endpoint)`: exports the records published from now on, in batches."""

    def __init__(self, bus: JetStreamBus, endpoint: str, *, drain_timeout_s: float = 5.0) -> None:
        # Imported here: without an endpoint, no process loads the SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.bus = bus
        self._exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=10)
        self.exported = 0
        spec = ConsumerSpec(
            stream=subjects.ACTIVATIONS_STREAM,
            durable=EXPORTER,
            deliver="new",
            ack_wait_s=30.0,
        )
        self._worker = StreamWorker(
            bus,
            spec,
            msgspec.json.Decoder(Activation).decode,
            handle_batch=self._export,
            drain_timeout_s=drain_timeout_s,
            name=EXPORTER,
        )

    async def __aenter__(self) -> OtlpExporter:
        await self._worker.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._worker.__aexit__(exc_type, exc, tb)
        self._exporter.shutdown()  # type: ignore[no-untyped-call]

    async def _export(self, batch: list[Delivery[Activation]]) -> None:
        plans = [plan for delivery in batch for plan in spans_of(delivery.value)]
        if not plans:
            return
        from opentelemetry.sdk.trace.export import SpanExportResult

        result = await asyncio.to_thread(self._exporter.export, [sdk_span(plan) for plan in plans])
        if result is not SpanExportResult.SUCCESS:
            # The batch comes back after the worker's delay: spans wait for the collector, none are dropped.
            raise Unavailable(f"the OTLP collector did not take {len(plans)} spans")
        self.exported += len(plans)


def sdk_span(plan: SpanPlan) -> Any:
    """The SDK's finished span for a plan."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    trace = int(plan.trace_id, 16)
    context = SpanContext(trace, int(plan.span_id, 16), is_remote=False, trace_flags=TraceFlags(1))
    parent = (
        SpanContext(trace, int(plan.parent_id, 16), is_remote=True, trace_flags=TraceFlags(1))
        if plan.parent_id
        else None
    )
    return ReadableSpan(
        name=plan.name,
        context=context,
        parent=parent,
        resource=_resource(Resource),
        attributes=plan.attributes,
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.OK if plan.ok else StatusCode.ERROR),
        start_time=plan.start_ns,
        end_time=plan.end_ns,
    )


_RESOURCE: list[Any] = []


def _resource(resource_type: Any) -> Any:
    if not _RESOURCE:
        _RESOURCE.append(resource_type.create({"service.name": "squall"}))
    return _RESOURCE[0]
