"""`squall standalone`'s role processes under load: SIGKILL a broker, an API worker and the invoker while fires
with idempotency keys pour in; the supervisor brings each back, and every acknowledged fire has exactly one
trigger record and one run per active rule (real rootless Podman, real nats-server and MongoDB wire server)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from broker.activation_store import RECORD, from_document
from broker.config import GUEST_KEY
from tests.e2e.test_standalone import Standalone, alive, descendants, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUEST_AUTH = tuple(GUEST_KEY.split(":", 1))
# At least this many fires, at about FIRE_RATE a second, until the last role killed is back.
FIRES = 600
FIRE_RATE = 80
CONCURRENCY = 8
# The role killed once this many fires were acknowledged (each waits for the previous one to be back).
KILLS = {100: "broker.1", 250: "api", 400: "invoker.1"}
FIRE_DEADLINE_S = 60.0
RECORDS_DEADLINE_S = 180.0
RESTART_DEADLINE_S = 60.0
ACTION = "def main(args):\n    return {'n': args.get('n')}\n"


def role_pids(standalone: Standalone) -> dict[str, int]:
    """The supervisor's live role processes by name (`broker.1` …), from their command lines."""
    found = {}
    for pid in descendants(standalone.proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"squall.role_process" in argv and alive(pid):
            found[argv[argv.index(b"squall.role_process") + 2].decode()] = pid
    return found


def connections(pid: int, port: int) -> int:
    """How many established TCP connections to `port` the process `pid` holds (from /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def wait_back(standalone: Standalone, name: str, old_pid: int) -> int:
    """The pid of `name` once the supervisor has restarted it and it serves again."""
    deadline = time.monotonic() + RESTART_DEADLINE_S
    while time.monotonic() < deadline:
        # The supervisor logs "back" once the new process said it serves.
        pid = role_pids(standalone).get(name)
        if pid not in (None, old_pid) and f"{name} is back (pid {pid})" in standalone.output():
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{name} not restarted in {RESTART_DEADLINE_S} s:\n{standalone.output()[-3000:]}")


def causes(records: Collection[dict[str, Any]]) -> list[str | None]:
    """The trigger activation each stored run of `count` was caused by."""
    found = records.find({"name": "count"}, {"_id": 0, RECORD: 1, "activationId": 1})
    return [from_document(d).cause for d in found]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    workdir = tmp_path_factory.mktemp("supervised")
    run = Standalone(
        workdir / "data",
        free_port(),
        workdir / "standalone.log",
        args=("--api-workers", "2", "--brokers", "1"),
        # A killed invoker's runs go to its successor after this long without a sign of life.
        settings={"SQUALL_INVOKER_ACK_WAIT_S": "3", "SQUALL_BROKER_ACK_WAIT_S": "3"},
    )
    try:
        run.wait_ready()
        yield run
    finally:
        run.stop(deadline_s=30)
    assert run.proc.returncode == 0, run.output()[-3000:]


def test_the_roles_run_as_processes_and_a_killed_one_comes_back_without_loss(standalone: Standalone) -> None:
    pids = role_pids(standalone)
    assert set(pids) == {"api.1", "api.2", "broker.1", "invoker.1", "feeds.1"}, pids
    assert "roles:      1 invoker, 1 broker, 1 feeds, 2 api" in standalone.output()

    with httpx.Client(base_url=standalone.url, auth=GUEST_AUTH, timeout=30) as api:
        for path, body in [
            ("actions/count", {"exec": {"kind": "python:default", "code": ACTION}}),
            ("triggers/tick", {}),
            ("rules/one", {"trigger": "tick", "action": "count"}),
            ("rules/two", {"trigger": "tick", "action": "count"}),
            ("rules/off", {"trigger": "tick", "action": "count"}),
        ]:
            r = api.put(f"/api/v1/namespaces/_/{path}", json=body)
            assert r.status_code == 200, r.text
        r = api.post("/api/v1/namespaces/_/rules/off", json={"status": "inactive"})
        assert r.status_code == 200, r.text

    acked: dict[str, str] = {}  # idempotency key → the trigger activation id
    retries = collections.Counter[str]()
    lock = threading.Lock()
    progress = threading.Condition(lock)
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=standalone.url, auth=GUEST_AUTH, timeout=10)
        c: httpx.Client = local.client
        return c

    def fire(n: int) -> None:
        key = f"fire-{n}"
        deadline = time.monotonic() + FIRE_DEADLINE_S
        while True:
            try:
                r = client().post(
                    "/api/v1/namespaces/_/triggers/tick", json={"n": n}, headers={"Idempotency-Key": key}
                )
                if r.status_code == 202:
                    with progress:
                        acked[key] = r.json()["activationId"]
                        progress.notify_all()
                    return
                assert r.status_code >= 500, r.text  # the backbone's hiccup is retried, a refusal is a bug
            except httpx.TransportError:
                pass  # the API worker that held this connection was killed: retry with the same key  # the API worker that held this connection was killed: retry with the same key
            with lock:
                retries[key] += 1
            assert time.monotonic() < deadline, f"fire {key} not acknowledged in {FIRE_DEADLINE_S} s"
            time.sleep(0.05)

    killed: dict[str, tuple[int, int]] = {}
    spread: dict[str, int] = {}  # API worker → the clients' connections it held when one was killed

    def acked_at_least(count: int) -> None:
        with progress:
            assert progress.wait_for(lambda: len(acked) >= count, FIRE_DEADLINE_S)

    def killer() -> None:
        for at, role in KILLS.items():
            # The victim is chosen a little ahead (reading /proc holds the GIL the fires need), so that the kill
            # itself lands amid requests in flight.
            acked_at_least(at - 30)
            live = role_pids(standalone)
            name = role
            if role == "api":
                # The API worker holding the most of the clients' connections.
                held = {n: connections(p, standalone.port) for n, p in live.items() if n.startswith("api.")}
                name = max(held, key=lambda n: held[n])
                spread.update(held)
            pid = live[name]
            acked_at_least(at)
            if role == "api":
                # Frozen first, so that the clients on its connections have requests in flight when it dies.
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            killed[name] = (pid, wait_back(standalone, name, pid))

    numbers = itertools.count()

    def keep_firing() -> None:
        for n in numbers:
            if n >= FIRES and kills.done():
                return
            fire(n)
            time.sleep(CONCURRENCY / FIRE_RATE)

    with ThreadPoolExecutor(CONCURRENCY + 1) as pool:
        kills = pool.submit(killer)
        for firing in [pool.submit(keep_firing) for _ in range(CONCURRENCY)]:
            firing.result()
        kills.result()

    assert {name.split(".")[0] for name in killed} == {"broker", "api", "invoker"}
    assert sum(spread.values()) >= CONCURRENCY // 2, spread
    # Each client on the killed API worker's connections lost a request in flight, and retried it.
    assert sum(retries.values()) >= max(spread.values()), (retries, spread)
    for name, (old, new) in killed.items():
        assert not alive(old) and alive(new), name
        assert f"{name} (pid {old}) ended after" in standalone.output()
        assert "killed by SIGKILL" in standalone.output()
    assert len(acked) >= FIRES
    fired = set(acked.values())
    assert len(fired) == len(acked), "two keys were answered with the same activation id"

    mongo_uri = standalone.banner_value("MongoDB")
    with MongoClient(mongo_uri, directConnection=True) as mongo:
        records = mongo["squall"]["activations"]
        deadline = time.monotonic() + RECORDS_DEADLINE_S
        while True:
            triggers = [d["activationId"] for d in records.find({"name": "tick"}, {"activationId": 1})]
            runs = causes(records)
            if len(triggers) >= len(fired) and len(runs) >= 2 * len(fired):
                break
            assert time.monotonic() < deadline, (
                f"after {RECORDS_DEADLINE_S} s: {len(triggers)} trigger records, {len(runs)} runs"
            )
            time.sleep(0.5)
        time.sleep(2)  # anything late and extra (a duplicate) would show up now
        triggers = [d["activationId"] for d in records.find({"name": "tick"}, {"activationId": 1})]
        runs = causes(records)

    # Exactly one trigger record per acknowledged fire, and one run per active rule (two) for each.
    assert sorted(triggers) == sorted(fired)
    per_fire = collections.Counter(runs)
    assert set(per_fire) == fired
    assert set(per_fire.values()) == {2}, [c for c in per_fire.items() if c[1] != 2][:5]
    print(
        f"\n{len(fired)} fires, {sum(retries.values())} retried requests, kills: {killed}, API spread: {spread}"
    )
