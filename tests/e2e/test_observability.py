"""Metrics and trace context on a real `squall standalone` (rootless Podman, the Python runtime), with its
metrics in a multiprocess directory and JSON logs: `/metrics` moves by exactly the work done, and a fire's
`traceparent` reaches every record it causes through a rule, a sequence and a retry, and the action itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.dead_letters import attempt_ids
from tests.e2e.test_fire_standalone import GUEST_SECRET, GUEST_USER, fire, put, record, rule_line, wait_for
from tests.e2e.test_standalone import Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TRACED = (
    "import os\n"
    "def main(args):\n"
    "    return {**args, 'trace': os.environ.get('__OW_TRACE_ID'), 'parent': os.environ.get('__OW_TRACEPARENT')}\n"
)
FAILING = "def main(args):\n    raise RuntimeError('always broken')\n"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Standalone]]:
    workdir = tmp_path_factory.mktemp("observability")
    settings_env = {"SQUALL_METRICS_DIR": str(workdir / "metrics"), "SQUALL_LOG_FORMAT": "json"}
    standalone = Standalone(workdir / "data", free_port(), workdir / "standalone.log", settings=settings_env)
    try:
        standalone.wait_ready()
        with httpx.Client(base_url=standalone.url, auth=(GUEST_USER, GUEST_SECRET), timeout=60) as client:
            yield client, standalone
    finally:
        standalone.stop()
    assert standalone.proc.returncode == 0, standalone.output()


def scrape(url: str) -> Samples:
    r = httpx.get(f"{url}/metrics", timeout=10)  # unauthenticated, as Prometheus scrapes
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    found: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much every series of `name` carrying `labels` moved, summed."""
    total = 0.0
    for (sample, series), value in after.items():
        if sample == name and all((k, v) in series for k, v in labels.items()):
            total += value - before.get((sample, series), 0.0)
    return total


def test_metrics_move_by_exactly_the_work(running: tuple[httpx.Client, Standalone]) -> None:
    api, standalone = running
    put(api, "actions/m-echo", {"exec": {"kind": "python:3.11", "code": TRACED}})
    put(api, "triggers/m-t", {})
    put(api, "rules/m-r", {"trigger": "m-t", "action": "m-echo"})
    put(api, "triggers/m-idle", {})  # no rule: its fires are answered 204
    # A first run, so that the measured ones find what they need (warm containers, queues) already there.
    assert api.post("/api/v1/namespaces/_/actions/m-echo", params={"blocking": "true"}).status_code == 200

    before = scrape(standalone.url)
    fired = [fire(api, "m-t", {"n": n}) for n in range(3)]
    assert [r.status_code for r in fired] == [202] * 3
    assert fire(api, "m-idle", {}).status_code == 204
    assert fire(api, "m-missing", {}).status_code == 404
    invoked = [api.post("/api/v1/namespaces/_/actions/m-echo", params={"blocking": "true"}) for _ in range(2)]
    assert [r.status_code for r in invoked] == [200, 200]
    runs = [rule_line(record(api, r.json()["activationId"]))["activationId"] for r in fired]
    for aid in runs:
        assert record(api, aid)["response"]["status"] == "success"

    # 3 trigger records + 3 rule runs + 2 invokes; the recorder writes them asynchronously.
    wait_for(
        lambda: moved(before, scrape(standalone.url), "squall_activation_records_written_total") >= 8,
        30,
        "the records",
    )
    after = scrape(standalone.url)
    assert moved(before, after, "squall_fires_accepted_total") == 3
    assert moved(before, after, "squall_fires_refused_total", reason="no_rule") == 1
    assert moved(before, after, "squall_fires_refused_total", reason="not_found") == 1
    assert moved(before, after, "squall_rule_runs_total", result="invoked") == 3
    assert moved(before, after, "squall_rule_runs_total", result="failed") == 0
    assert moved(before, after, "squall_invocations_total", kind="python:3.11", status="success") == 5
    assert moved(before, after, "squall_invocations_total") == 5
    assert moved(before, after, "squall_container_starts_total") == 5
    assert moved(before, after, "squall_container_start_seconds_count") == 5
    assert moved(before, after, "squall_activation_duration_seconds_count", kind="python:3.11") == 5
    assert moved(before, after, "squall_activation_records_written_total") == 8
    assert moved(before, after, "squall_recorder_lag_seconds_count") == 8
    assert moved(before, after, "squall_dead_letters_total") == 0
    # Read from JetStream at scrape time: every stream is there, and nothing is left waiting.
    for stream in ("TRIGGERS", "INVOKE", "ACTIVATIONS", "DEADLETTER"):
        assert ("squall_stream_messages", (("stream", stream),)) in after
    assert after[("squall_consumer_pending_messages", (("stream", "INVOKE"),))] == 0
    # The pool's gauges come from the invoker's heartbeat (each second): its containers, in some state.
    deadline = time.monotonic() + 10
    while (pool := sum(v for (n, _), v in after.items() if n == "squall_pool_containers")) < 1:
        assert time.monotonic() < deadline, "no pool container reported by the invoker's heartbeat"
        time.sleep(0.2)
        after = scrape(standalone.url)
    assert pool >= 1
    # No series names an activation.
    assert not any(aid in str(series) for (_, series) in after for aid in runs)


def test_a_traceparent_reaches_every_record_through_a_rule_a_sequence_and_a_retry(
    running: tuple[httpx.Client, Standalone],
) -> None:
    api, standalone = running
    put(api, "actions/t-step", {"exec": {"kind": "python:3.11", "code": TRACED}})
    put(api, "actions/t-seq", {"exec": {"kind": "sequence", "components": ["/_/t-step", "/_/t-step"]}})
    put(api, "actions/t-shaky", {"exec": {"kind": "python:3.11", "code": FAILING}})
    put(api, "triggers/t-fire", {})
    put(api, "rules/t-to-seq", {"trigger": "t-fire", "action": "t-seq"})
    put(
        api,
        "rules/t-to-shaky",
        {"trigger": "t-fire", "action": "t-shaky", "retry": {"attempts": 2, "delayMs": 100}},
    )

    r = fire(api, "t-fire", {"x": 1}, traceparent=TRACEPARENT)
    assert r.status_code == 202, r.text
    trigger = record(api, r.json()["activationId"])
    assert note(trigger, "traceId") == TRACE_ID
    lines = {line["rule"]: line for line in map(json.loads, trigger["logs"])}
    sequence = record(api, next(v for k, v in lines.items() if k.endswith("t-to-seq"))["activationId"])
    assert sequence["response"]["status"] == "success"
    assert note(sequence, "traceId") == TRACE_ID
    components = [record(api, aid) for aid in sequence["logs"]]
    assert len(components) == 2
    for component in components:
        assert note(component, "traceId") == TRACE_ID
        result = component["response"]["result"]
        # The action itself sees the trace: its id, and a traceparent of this trace with a span of its own.
        assert result["trace"] == TRACE_ID
        assert result["parent"].startswith(f"00-{TRACE_ID}-") and result["parent"] != TRACEPARENT

    first = next(v for k, v in lines.items() if k.endswith("t-to-shaky"))["activationId"]
    attempts = [record(api, aid) for aid in attempt_ids(first, 2)]
    assert [note(a, "attempt") for a in attempts] == [None, 2]
    assert all(note(a, "traceId") == TRACE_ID for a in attempts)

    def letter() -> dict[str, Any] | None:
        got = api.get(f"/api/v1/namespaces/_/deadletters/{first}")
        return got.json() if got.status_code == 200 else None

    dead = wait_for(letter, 30, "the dead letter")
    assert dead["invocation"]["traceparent"].startswith(f"00-{TRACE_ID}-")

    # Without a traceparent, one is started: the records still name a (new) trace.
    plain = api.post("/api/v1/namespaces/_/actions/t-step", params={"blocking": "true"}).json()
    started = note(plain, "traceId")
    assert isinstance(started, str) and len(started) == 32 and started != TRACE_ID
    assert plain["response"]["result"]["trace"] == started

    # JSON logs: whatever the roles wrote is one object per line, with a level and a message.
    logged = [json.loads(line) for line in standalone.output().splitlines() if line.startswith("{")]
    assert all("message" in line and "level" in line for line in logged)


def note(record: dict[str, Any], key: str) -> Any:
    return next((a.get("value") for a in record["annotations"] if a["key"] == key), None)


def test_the_metrics_directory_holds_the_processes_files(running: tuple[httpx.Client, Standalone]) -> None:
    _, standalone = running
    files = list(Path(standalone.data_dir).parent.joinpath("metrics").glob("*.db"))
    assert files, "multiprocess mode writes one file per process and metric type"
