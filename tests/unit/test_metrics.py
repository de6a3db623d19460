"""Metrics: bounded labels, pre-bound children, namespaces only when asked, off means no-op, the exposition."""

from __future__ import annotations

import io
import json
import logging

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from broker import log_context, metrics
from broker.activations import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS
from broker.dead_letters import reason_label
from broker.errors import BadRequest, NotFound, PayloadTooLarge, Throttled, Unavailable


def samples(registry_text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(registry_text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_children_are_bound_once_and_count() -> None:
    m = metrics.Metrics()
    child = m.invocations("python:3.11", "success")
    assert m.invocations("python:3.11", "success") is child
    child.inc()
    child.inc()
    m.fires_accepted().inc()
    from prometheus_client import generate_latest

    found = samples(generate_latest(m.registry))
    assert found[("squall_invocations_total", (("kind", "python:3.11"), ("status", "success")))] == 2
    assert found[("squall_fires_accepted_total", ())] == 1


def test_namespaces_label_only_when_asked() -> None:
    from prometheus_client import generate_latest

    plain = metrics.Metrics()
    plain.fires_refused("throttled", namespace="tenant-a").inc()
    assert ("squall_fires_refused_total", (("reason", "throttled"),)) in samples(
        generate_latest(plain.registry)
    )
    labelled = metrics.Metrics(namespaces=True)
    labelled.fires_refused("throttled", namespace="tenant-a").inc()
    key = ("squall_fires_refused_total", (("namespace", "tenant-a"), ("reason", "throttled")))
    assert samples(generate_latest(labelled.registry))[key] == 1


def test_switched_off_every_metric_is_a_no_op() -> None:
    from prometheus_client import generate_latest

    off = metrics.Metrics(enabled=False)
    off.invocations("python:3.11", "success").inc()
    off.container_start_seconds("cold").observe(0.2)
    off.pool_containers("busy").set(3)
    assert generate_latest(off.registry) == b""


def test_labels_are_bounded_values() -> None:
    assert metrics.status_label(SUCCESS) == "success"
    assert metrics.status_label(DEVELOPER_ERROR) == "developer_error"
    assert metrics.status_label("something new") == "internal_error"
    assert reason_label("throttled") == "throttled"
    assert reason_label(APPLICATION_ERROR) == "application_error"
    assert metrics.refusal_reason(Throttled("x")) == "throttled"
    assert metrics.refusal_reason(NotFound()) == "not_found"
    assert metrics.refusal_reason(PayloadTooLarge("x")) == "too_large"
    assert metrics.refusal_reason(BadRequest("x")) == "bad_request"
    assert metrics.refusal_reason(Unavailable("x")) == "unavailable"
    assert metrics.refusal_reason(RuntimeError()) == "error"


def test_the_exposition_adds_the_backbone_families() -> None:
    gauge = GaugeMetricFamily("squall_stream_messages", "doc", labels=["stream"])
    gauge.add_metric(["INVOKE"], 7)
    text = metrics.exposition([gauge])
    assert samples(text)[("squall_stream_messages", (("stream", "INVOKE"),))] == 7


def test_json_log_lines_carry_role_namespace_activation_and_trace() -> None:
    out = io.StringIO()
    logger = logging.getLogger("squall.test-json")
    logger.propagate = False
    logger.addHandler(log_context.json_handler(out))
    logger.setLevel(logging.INFO)
    log_context.set_role("invoker")
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with log_context.working_on("guest", "a" * 32, parent):
        logger.info("ran %s", "x", extra={"durationMs": 12, "odd": object()})
    logger.info("after")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "ran x" and first["level"] == "info" and first["logger"] == "squall.test-json"
    assert first["role"] == "invoker" and first["namespace"] == "guest" and first["activationId"] == "a" * 32
    assert first["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736" and first["durationMs"] == 12
    assert first["odd"].startswith("<object")
    assert "activationId" not in second and second["role"] == "invoker"


def test_the_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    import re
    from pathlib import Path

    from prometheus_client import generate_latest

    m = metrics.Metrics()
    m.fires_refused("throttled").inc()  # a labelled family shows its samples only once a child exists
    exported = {family.name for family in m.registry.collect()}
    exported |= {
        "squall_stream_messages",
        "squall_consumer_pending_messages",
        "squall_consumer_ack_pending_messages",
    }
    assert generate_latest(m.registry)
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/squall-dashboard.json").read_text())
    queried = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"squall_[a-z_]+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
