"""Which spans a record makes (pure): none without a trace; its run, a parent from `cause`, and a cold start's init."""

from __future__ import annotations

from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, make_response
from broker.entities import KeyValue
from broker.otlp_export import span_id_of, spans_of

TRACE = "0af7651916cd43dd8448eb211c80319c"
AID = "a" * 32


def record(
    *annotations: KeyValue, status: str = SUCCESS, cause: str | None = None, end: int = 0
) -> Activation:
    return Activation(
        namespace="ns",
        name="x",
        subject="s",
        activationId=AID,
        start=1_000,
        end=end,
        cause=cause,
        response=make_response(status, {}),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=list(annotations),
    )


def test_no_trace_no_span() -> None:
    assert spans_of(record()) == []
    assert spans_of(record(KeyValue(key="traceId", value="short"))) == []


def test_a_trigger_record_is_a_fire_span_of_no_duration() -> None:
    (span,) = spans_of(record(KeyValue(key="traceId", value=TRACE)))
    assert (span.name, span.trace_id, span.span_id, span.parent_id) == ("fire ns/x", TRACE, AID[:16], None)
    assert span.start_ns == span.end_ns == 1_000_000_000 and span.ok


def test_a_cold_run_has_its_init_as_a_child_and_its_cause_as_parent() -> None:
    cause = "b" * 32
    run, init = spans_of(
        record(
            KeyValue(key="traceId", value=TRACE),
            KeyValue(key="path", value="ns/pkg/x"),
            KeyValue(key="kind", value="nodejs:18"),
            KeyValue(key="initTime", value=7),
            status=APPLICATION_ERROR,
            cause=cause,
            end=1_050,
        )
    )
    assert (run.name, run.parent_id, run.ok) == ("run ns/pkg/x", span_id_of(cause), False)
    assert run.end_ns - run.start_ns == 50_000_000
    assert (init.name, init.parent_id, init.end_ns - init.start_ns) == (
        "init ns/pkg/x",
        run.span_id,
        7_000_000,
    )
    assert init.span_id not in (run.span_id, span_id_of(cause))
