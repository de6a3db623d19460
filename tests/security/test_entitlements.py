"""Tenant safety, part A (issue 12, items 2-4), probed as a second tenant would on a real `squall standalone`
(rootless Podman, the Python runtime) with two namespaces: `pub` publishes a package, `caller` uses it.

- Entitlements are checked when a run runs: a rule and a sequence made while the package was published are
  refused, with OpenWhisk's 403 wording in their records, from the first run after it is unpublished.
- Throttles charge the caller: a caller at its own concurrentInvocations gets 429 invoking `pub`'s shared action,
  while `pub` still invokes it; `/ping` answers within 100 ms meanwhile.
- Keys: another namespace's action never gets the caller's key; the caller's own code (directly or as a sequence
  component) still does; and the bytes NATS stores on disk (the INVOKE stream among them) never hold it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_standalone import SQUALL, Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOT_AUTHORIZED = "The supplied authentication is not authorized to access this resource."
ECHO = "def main(args):\n    return args\n"
SLEEPY = "import time\n\ndef main(args):\n    time.sleep(4)\n    return {'slept': 4}\n"
HAS_KEY = (
    "import os\n\ndef main(args):\n    return {**args, 'has_key': bool(os.environ.get('__OW_API_KEY'))}\n"
)
SLOW_HAS_KEY = (
    "import os, time\n\ndef main(args):\n    time.sleep(3)\n"
    "    return {**args, 'has_key': bool(os.environ.get('__OW_API_KEY'))}\n"
)
ASKS_FOR_KEY = [{"key": "provide-api-key", "value": True}]


class Tenant:
    def __init__(self, name: str, key: str, url: str) -> None:
        self.name, self.key = name, key
        self.client = httpx.Client(base_url=url, auth=tuple(key.split(":", 1)), timeout=60)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.client.request(method, path, **kwargs)
        assert r.status_code in (200, 202), f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def action(self, name: str, code: str, **extra: Any) -> None:
        body = {"exec": {"kind": "python:default", "code": code}, **extra}
        self.ok("PUT", f"/api/v1/namespaces/_/actions/{name}?overwrite=true", json=body)

    def record(self, activation_id: str, deadline_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while True:
            r = self.client.get(f"/api/v1/namespaces/_/activations/{activation_id}")
            if r.status_code == 200:
                return dict(r.json())
            assert time.monotonic() < deadline, f"no record {activation_id} within {deadline_s} s"
            time.sleep(0.1)


def create_namespace(data_dir: Path, name: str, *limits: str) -> str:
    created = subprocess.run(
        [str(SQUALL), "admin", "--data-dir", str(data_dir), "namespace", "create", name, *limits],
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    workdir = tmp_path_factory.mktemp("entitlements-standalone")
    server = Standalone(workdir / "data", free_port(), workdir / "standalone.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.output()


@pytest.fixture(scope="module")
def pub(standalone: Standalone) -> Iterator[Tenant]:
    tenant = Tenant("pub", create_namespace(standalone.data_dir, "pub"), standalone.url)
    yield tenant
    tenant.client.close()


@pytest.fixture(scope="module")
def caller(standalone: Standalone) -> Iterator[Tenant]:
    key = create_namespace(standalone.data_dir, "caller", "--concurrent-invocations", "1")
    tenant = Tenant("caller", key, standalone.url)
    yield tenant
    tenant.client.close()


def stream_files(standalone: Standalone, stream: str) -> list[Path]:
    """The files JetStream keeps a stream in, under the standalone's embedded nats-server."""
    return [p for p in (standalone.data_dir / "nats").rglob("*") if p.is_file() and stream in p.parts]


def ping_ms(standalone: Standalone) -> float:
    """The median of five `/ping`s on one connection: what the event loop answers in, without the machine's
    passing stalls (two cores shared with container starts) deciding it alone."""
    times = []
    with httpx.Client(base_url=standalone.url, timeout=5) as client:
        for _ in range(5):
            started = time.perf_counter()
            assert client.get("/ping").status_code == 200
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[2]


def test_unpublishing_stops_a_rule_and_a_sequence_at_their_next_run(pub: Tenant, caller: Tenant) -> None:
    pub.ok("PUT", "/api/v1/namespaces/_/packages/lib?overwrite=true", json={"publish": True})
    pub.action("lib/echo", ECHO)
    caller.ok("PUT", "/api/v1/namespaces/_/triggers/t?overwrite=true", json={})
    rule = {"trigger": "t", "action": "/pub/lib/echo"}
    caller.ok("PUT", "/api/v1/namespaces/_/rules/r?overwrite=true", json=rule)
    sequence = {"exec": {"kind": "sequence", "components": ["/pub/lib/echo"]}}
    caller.ok("PUT", "/api/v1/namespaces/_/actions/seq?overwrite=true", json=sequence)

    def fire() -> dict[str, Any]:
        fired = caller.ok("POST", "/api/v1/namespaces/_/triggers/t", json={"n": 1})
        (line,) = caller.record(fired["activationId"])["logs"]
        return dict(json.loads(line))

    assert fire()["success"]
    r = caller.client.post("/api/v1/namespaces/_/actions/seq?blocking=true", json={"n": 1})
    assert r.status_code == 200 and r.json()["response"]["result"] == {"n": 1}, r.text

    pub.ok("PUT", "/api/v1/namespaces/_/packages/lib?overwrite=true", json={"publish": False})
    line = fire()
    assert (line["success"], line["error"]) == (False, NOT_AUTHORIZED), line
    r = caller.client.post("/api/v1/namespaces/_/actions/seq?blocking=true", json={"n": 1})
    assert r.status_code == 502, r.text
    record = caller.record(r.json()["activationId"])
    assert record["response"]["status"] == "application error"
    assert record["response"]["result"] == {"error": NOT_AUTHORIZED}
    # Nothing of `pub` leaks through the refusals: the same words whatever `pub` has.
    r = caller.client.get("/api/v1/namespaces/pub/packages/lib")
    assert r.status_code == 403 and "echo" not in r.text


def test_a_caller_over_its_own_concurrency_gets_429_while_the_owner_still_invokes(
    standalone: Standalone, pub: Tenant, caller: Tenant
) -> None:
    pub.ok("PUT", "/api/v1/namespaces/_/packages/shared?overwrite=true", json={"publish": True})
    pub.action("shared/sleepy", SLEEPY)
    idle = time.monotonic() + 30
    while caller.ok("GET", "/api/v1/namespaces/_/queue") != {
        "queued": 0,
        "running": 0,
        "concurrentInvocations": 1,
    }:
        assert time.monotonic() < idle, "the caller's earlier runs never finished"
        time.sleep(0.1)
    path = "/api/v1/namespaces/pub/actions/shared/sleepy"
    first = caller.client.post(path, json={})
    assert first.status_code == 202, first.text
    second = caller.client.post(path, json={})
    assert second.status_code == 429, second.text
    assert second.json()["error"] == "Too many concurrent requests in flight (count: 1, allowed: 1)."
    assert ping_ms(standalone) < 100
    for _ in range(2):  # the publisher is not held back by its caller's runs
        r = pub.client.post("/api/v1/namespaces/_/actions/shared/sleepy", json={})
        assert r.status_code == 202, r.text
    record = caller.record(first.json()["activationId"])
    assert record["namespace"] == "caller" and record["response"]["result"] == {"slept": 4}


def test_keys_reach_only_the_callers_own_code_and_never_the_disk(
    standalone: Standalone, pub: Tenant, caller: Tenant
) -> None:
    pub.ok("PUT", "/api/v1/namespaces/_/packages/keys?overwrite=true", json={"publish": True})
    pub.action("keys/peek", HAS_KEY, annotations=ASKS_FOR_KEY)
    caller.action("peek", HAS_KEY, annotations=ASKS_FOR_KEY)
    sequence = {"exec": {"kind": "sequence", "components": ["/pub/keys/peek", "/caller/peek"]}}
    caller.ok("PUT", "/api/v1/namespaces/_/actions/peeks?overwrite=true", json=sequence)
    marker = "marker-7f3c9e1d"  # stored as it was sent: shows the scan below reads what the stream stored

    r = caller.client.post("/api/v1/namespaces/pub/actions/keys/peek?blocking=true", json={"m": marker})
    assert r.status_code == 200 and r.json()["response"]["result"]["has_key"] is False, r.text
    r = caller.client.post("/api/v1/namespaces/_/actions/peek?blocking=true", json={"m": marker})
    assert r.status_code == 200 and r.json()["response"]["result"]["has_key"] is True, r.text
    r = caller.client.post("/api/v1/namespaces/_/actions/peeks?blocking=true", json={"m": marker})
    assert r.status_code == 200, r.text
    assert r.json()["response"]["result"]["has_key"] is True  # the last component, the caller's own
    components = caller.record(r.json()["activationId"])["logs"]
    first, last = (caller.record(aid) for aid in components)
    assert first["response"]["result"]["has_key"] is False and last["response"]["result"]["has_key"] is True

    # While a sequence waits in the INVOKE stream (its component sleeps), the stream's files on disk hold the
    # invocation (the marker shows it) but not the key it carries for its component.
    caller.action("slowpeek", SLOW_HAS_KEY, annotations=ASKS_FOR_KEY)
    slow = {"exec": {"kind": "sequence", "components": ["/caller/slowpeek"]}}
    caller.ok("PUT", "/api/v1/namespaces/_/actions/slowseq?overwrite=true", json=slow)
    running = caller.ok("POST", "/api/v1/namespaces/_/actions/slowseq", json={"m": marker})
    secret = caller.key.split(":", 1)[1].encode()
    deadline = time.monotonic() + 3
    while not any(marker.encode() in p.read_bytes() for p in stream_files(standalone, "INVOKE")):
        assert time.monotonic() < deadline, "the INVOKE stream's files never showed the invocation"
        time.sleep(0.05)
    assert not any(secret in p.read_bytes() for p in stream_files(standalone, "INVOKE"))
    record = caller.record(running["activationId"])
    assert record["response"]["result"]["has_key"] is True, "the sealed key still reached the component"
    leaks = [p for p in standalone.data_dir.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaks == [], f"the caller's key is stored in plaintext in {leaks}"
    secret_file = standalone.data_dir / "invocation.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
