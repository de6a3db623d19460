"""Traced activation records reach a real OTLP/HTTP endpoint as spans: a fire, the rule's run caused by it (its
child) and that run's cold-start init; a collector that refuses a batch gets it again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from broker.activations import SUCCESS, Activation, make_response, new_activation_id
from broker.bus import JetStreamBus
from broker.codec import encode
from broker.entities import KeyValue
from broker.otlp_export import OtlpExporter, span_id_of
from broker.subjects import activation_subject
from tests.conditions import eventually


class Collector:
    """An OTLP/HTTP endpoint on loopback: keeps every span it is sent; refuses the first `refuse` requests."""

    def __init__(self, refuse: int = 0) -> None:
        self.spans: list[Any] = []
        self.requests = 0
        self.refuse = refuse
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.requests += 1
                if collector.requests <= collector.refuse:
                    self.send_response(503)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def names(self) -> set[str]:
        return {span.name for span in self.spans}


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector(refuse=1)
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()


def record(namespace: str, name: str, trace: str, **fields: Any) -> Activation:
    start = fields.pop("start", int(time.time() * 1000))
    annotations = [KeyValue(key="traceId", value=trace), *fields.pop("annotations", [])]
    return Activation(
        namespace=namespace,
        name=name,
        subject="s",
        activationId=new_activation_id(),
        start=start,
        response=make_response(SUCCESS, {}),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=annotations,
        **fields,
    )


async def test_a_fire_and_its_run_are_one_trace(bus: JetStreamBus, collector: Collector) -> None:
    ns = f"otlp-{uuid.uuid4().hex[:8]}"
    trace = uuid.uuid4().hex
    fire = record(ns, "t", trace)
    run = record(
        ns,
        "a",
        trace,
        cause=fire.activationId,
        start=fire.start,  # not a clock read of its own: a millisecond may pass between the two records
        end=fire.start + 40,
        duration=40,
        annotations=[
            KeyValue(key="path", value=f"{ns}/a"),
            KeyValue(key="kind", value="python:3.11"),
            KeyValue(key="initTime", value=25),
        ],
    )
    untraced = record(ns, "quiet", "")
    async with OtlpExporter(bus, collector.url) as exporter:
        for item in (fire, run, untraced):
            await bus.publish(activation_subject(ns, item.name), encode(item), msg_id=item.activationId)

        async def all_spans() -> bool:
            return {f"fire {ns}/t", f"run {ns}/a", f"init {ns}/a"} <= collector.names()

        await eventually(all_spans, 20, "the three spans at the collector")
    assert collector.requests >= 2, "the refused batch was sent again"
    by_name = {span.name: span for span in collector.spans}
    assert len([s for s in collector.spans if s.name.endswith(f"{ns}/a") or s.name.endswith(f"{ns}/t")]) == 3
    fire_span, run_span, init_span = (
        by_name[f"{k} {ns}/{n}"] for k, n in (("fire", "t"), ("run", "a"), ("init", "a"))
    )
    assert {s.trace_id.hex() for s in (fire_span, run_span, init_span)} == {trace}
    assert run_span.parent_span_id.hex() == fire_span.span_id.hex() == span_id_of(fire.activationId)
    assert init_span.parent_span_id == run_span.span_id
    assert run_span.end_time_unix_nano - run_span.start_time_unix_nano == 40_000_000
    assert init_span.end_time_unix_nano - init_span.start_time_unix_nano == 25_000_000
    assert not any("quiet" in s.name for s in collector.spans), "a record without a trace makes no span"
    assert exporter.exported >= 3
