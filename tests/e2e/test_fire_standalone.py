"""Trigger fires on a real `squall standalone` (real rootless Podman, the real Python runtime), as a user sees
them through the API with the guest key: the trigger's record, the rule's run with what the action received,
idempotency keys, a disabled rule; and a failing rule-fired run retried, dead-lettered and redriven."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from broker.config import GUEST_KEY
from tests.e2e.test_standalone import Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUEST_USER, _, GUEST_SECRET = GUEST_KEY.partition(":")

PROBE = (
    'def main(args):\n    return {"got": args.get("x"), "hdr": args.get("__ow_headers", {}).get("x-probe")}\n'
)
FAILING = "def main(args):\n    raise RuntimeError('always broken')\n"
FIXED = "def main(args):\n    return {'fixed': True, 'n': args.get('n')}\n"
# A cold start of the Python runtime included; the whole module stays well under a minute.
RUN_DEADLINE_S = 45.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One standalone for the module, and a client on it with the guest key."""
    workdir = tmp_path_factory.mktemp("fire-standalone")
    standalone = Standalone(workdir / "data", free_port(), workdir / "standalone.log")
    try:
        standalone.wait_ready()
        with httpx.Client(base_url=standalone.url, auth=(GUEST_USER, GUEST_SECRET), timeout=30) as client:
            yield client
    finally:
        standalone.stop()
    assert standalone.proc.returncode == 0, standalone.output()


def wait_for(probe: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Poll `probe` until it answers something truthy, within `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.1)


def record(api: httpx.Client, activation_id: str, deadline_s: float = RUN_DEADLINE_S) -> dict[str, Any]:
    """The activation record once it is stored (the rule engine and the invoker write it after the 202)."""

    def stored() -> dict[str, Any] | None:
        r = api.get(f"/api/v1/namespaces/_/activations/{activation_id}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    found: dict[str, Any] = wait_for(stored, deadline_s, f"activation {activation_id}")
    return found


def put(api: httpx.Client, path: str, body: dict[str, Any], **query: str) -> None:
    r = api.put(f"/api/v1/namespaces/_/{path}", json=body, params=query)
    assert r.status_code == 200, r.text


def fire(api: httpx.Client, trigger: str, payload: dict[str, Any], **headers: str) -> httpx.Response:
    return api.post(f"/api/v1/namespaces/_/triggers/{trigger}", json=payload, headers=headers)


def rule_line(trigger_record: dict[str, Any]) -> dict[str, Any]:
    """The trigger record's one log line (a JSON string per rule), parsed."""
    (line,) = trigger_record["logs"]
    assert isinstance(line, str), trigger_record["logs"]
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_fire_runs_the_rule_on_podman_and_records_both(api: httpx.Client) -> None:
    ns = api.get("/api/v1/namespaces").json()[0]
    put(api, "actions/probe", {"exec": {"kind": "python:default", "code": PROBE}})
    put(api, "triggers/probe-t", {"parameters": [{"key": "x", "value": 1}]})
    put(api, "rules/probe-r", {"trigger": "probe-t", "action": "probe"})

    r = fire(api, "probe-t", {"x": 42}, **{"X-Probe": "yes", "Idempotency-Key": "probe-1"})
    assert r.status_code == 202, r.text
    fired = r.json()["activationId"]
    assert r.json() == {"activationId": fired} and r.headers["x-openwhisk-activation-id"] == fired

    trigger = record(api, fired)
    assert trigger["name"] == "probe-t" and trigger["namespace"] == ns
    assert trigger["response"]["success"] is True and trigger["response"]["result"] == {"x": 42}
    line = rule_line(trigger)
    assert line["statusCode"] == 0 and line["success"] is True
    assert line["rule"] == f"{ns}/probe-r" and line["action"] == f"{ns}/probe"

    run = record(api, line["activationId"])
    assert run["name"] == "probe" and run["activationId"] == line["activationId"]
    assert run["response"]["status"] == "success" and run["response"]["success"] is True, run["response"]
    # The payload's x wins over the trigger parameter's; the request's headers arrive lowercased.
    assert run["response"]["result"] == {"got": 42, "hdr": "yes"}
    assert run["cause"] == fired

    again = fire(api, "probe-t", {"x": 42}, **{"X-Probe": "yes", "Idempotency-Key": "probe-1"})
    assert again.status_code == 202 and again.json()["activationId"] == fired

    # Without a payload, the trigger's parameter is what the action gets (a warm run).
    r = fire(api, "probe-t", {})
    assert r.status_code == 202, r.text
    second = record(api, rule_line(record(api, r.json()["activationId"]))["activationId"])
    assert second["response"]["result"] == {"got": 1, "hdr": None}

    r = api.post("/api/v1/namespaces/_/rules/probe-r", json={"status": "inactive"})
    assert r.status_code == 200, r.text
    r = fire(api, "probe-t", {"x": 42})
    assert r.status_code == 204 and r.content == b""


def test_a_failing_rule_run_is_retried_dead_lettered_and_redriven(api: httpx.Client) -> None:
    ns = api.get("/api/v1/namespaces").json()[0]
    put(api, "actions/shaky", {"exec": {"kind": "python:default", "code": FAILING}})
    put(api, "triggers/shaky-t", {})
    put(
        api,
        "rules/shaky-r",
        {"trigger": "shaky-t", "action": "shaky", "retry": {"attempts": 2, "delayMs": 100}},
    )

    r = fire(api, "shaky-t", {"n": 7})
    assert r.status_code == 202, r.text
    fired = r.json()["activationId"]
    run_id = rule_line(record(api, fired))["activationId"]

    def dead_letter() -> dict[str, Any] | None:
        r = api.get("/api/v1/namespaces/_/deadletters")
        assert r.status_code == 200, r.text
        return next((letter for letter in r.json() if letter["cause"] == fired), None)

    letter: dict[str, Any] = wait_for(dead_letter, RUN_DEADLINE_S, "the dead letter")
    assert letter["id"] == run_id and letter["attempts"] == 2 and len(letter["activationIds"]) == 2
    assert letter["rule"] == f"{ns}/shaky-r" and letter["trigger"] == f"{ns}/shaky-t"
    assert letter["action"] == f"{ns}/shaky" and "always broken" in json.dumps(letter["reason"])
    for attempt in letter["activationIds"]:
        failed = record(api, attempt, deadline_s=5)
        assert failed["response"]["success"] is False and failed["cause"] == fired

    put(api, "actions/shaky", {"exec": {"kind": "python:default", "code": FIXED}}, overwrite="true")
    r = api.post(f"/api/v1/namespaces/_/deadletters/{run_id}/redrive")
    assert r.status_code == 202, r.text
    redriven = r.json()["activationId"]
    assert redriven not in (run_id, *letter["activationIds"])
    run = record(api, redriven)
    assert run["response"]["status"] == "success", run["response"]
    assert run["response"]["result"] == {"fixed": True, "n": 7} and run["cause"] == fired
    assert api.get(f"/api/v1/namespaces/_/deadletters/{run_id}").status_code == 404
    assert all(letter["id"] != run_id for letter in api.get("/api/v1/namespaces/_/deadletters").json())
