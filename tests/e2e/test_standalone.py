"""`squall standalone` end to end: boot, serve the first endpoints, stop cleanly, restart with its state."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from broker.activation_store import ActivationStore
from broker.activations import SUCCESS, Activation, make_response, new_activation_id
from broker.bus import JetStreamBus
from broker.codec import encode
from broker.config import GUEST_KEY
from broker.errors import NotFound
from broker.subjects import activation_subject
from squall import runtime_file

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUEST_AUTH = tuple(GUEST_KEY.split(":", 1))
SQUALL = Path(sys.executable).with_name("squall")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


async def publish_activation(nats_url: str, namespace: str) -> str:
    record = Activation(
        namespace=namespace,
        name="hello",
        subject=namespace,
        activationId=new_activation_id(),
        start=int(time.time() * 1000),
        end=int(time.time() * 1000),
        duration=0,
        response=make_response(SUCCESS, {"ok": True}),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=[],
    )
    async with JetStreamBus(nats_url) as bus:
        await bus.publish(activation_subject(namespace, "hello"), encode(record), msg_id=record.activationId)
    return record.activationId


async def wait_stored(mongo_uri: str, activation_id: str, deadline_s: float = 15) -> None:
    async with ActivationStore(mongo_uri, "squall") as store:
        end = time.monotonic() + deadline_s
        while True:
            try:
                await store.get("persist", activation_id)
                return
            except NotFound:
                assert time.monotonic() < end, f"activation {activation_id} not stored in {deadline_s} s"
                await asyncio.sleep(0.1)


class Standalone:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        log: Path,
        args: tuple[str, ...] = (),
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir, self.port, self.log_path = data_dir, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.log = log.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
        env.update(settings or {})
        env["COLUMNS"] = "300"  # keep the banner's lines whole
        self.proc = subprocess.Popen(
            [str(SQUALL), "standalone", "--api-port", str(port), "--data-dir", str(data_dir), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, deadline_s: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < deadline_s:
            assert self.proc.poll() is None, f"standalone exited early:\n{self.output()}"
            if "Squall standalone" in self.output():
                try:
                    if httpx.get(f"{self.url}/api/v1", timeout=1).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"standalone not ready in {deadline_s} s:\n{self.output()}")

    def banner_value(self, label: str) -> str:
        match = re.search(rf"{label}:\s+(\S+)", self.output())
        assert match, self.output()
        return match.group(1)

    def stop(self, deadline_s: float = 15) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=deadline_s)
        self.log.close()
        return time.monotonic() - started


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_standalone_serves_stops_cleanly_and_keeps_state(workdir: Path) -> None:
    data_dir = workdir / "data"
    port = free_port()
    first = Standalone(data_dir, port, workdir / "first.log")
    try:
        first.wait_ready()
        r = httpx.get(f"{first.url}/api/v1")
        info = r.json()
        assert info["api_version_path"] == "v1"
        assert info["description"] == "OpenWhisk API"
        assert r.headers["x-request-id"]

        r = httpx.get(f"{first.url}/api/v1/namespaces", auth=GUEST_AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == ["guest"]

        r = httpx.get(f"{first.url}/api/v1/namespaces")
        assert r.status_code == 401
        assert set(r.json()) == {"error", "code"}
        assert r.headers["www-authenticate"].startswith("Basic")
        r = httpx.get(f"{first.url}/api/v1/namespaces", auth=(GUEST_AUTH[0], "wrong"))
        assert r.status_code == 401

        assert "well-known development key" in first.output()
        # The embedded NATS requires this data dir's credentials: the banner shows the URL without them,
        # the runtime file (0600) has them for the admin CLI.
        assert first.banner_value("NATS").startswith("nats://127.0.0.1:")
        info = runtime_file.read(data_dir)
        assert info is not None and "@" in info.nats_url and "@" not in first.banner_value("NATS")
        assert (data_dir / runtime_file.FILENAME).stat().st_mode & 0o077 == 0
        nats_url = info.nats_url
        mongo_uri = first.banner_value("MongoDB")
        assert nats_url.startswith("nats://")
        assert mongo_uri.startswith("mongodb://")

        # State to find again after a restart: a namespace made with the admin CLI (found through the
        # running standalone's data dir) and an activation that the broker's recorder stores.
        created = subprocess.run(
            [str(SQUALL), "admin", "--data-dir", str(data_dir), "namespace", "create", "persist"],
            capture_output=True,
            text=True,
            check=True,
        )
        persist_key = created.stdout.strip().splitlines()[-1]
        r = httpx.get(f"{first.url}/api/v1/namespaces", auth=tuple(persist_key.split(":", 1)))
        assert r.json() == ["persist"]
        activation_id = asyncio.run(publish_activation(nats_url, "persist"))
        asyncio.run(wait_stored(mongo_uri, activation_id))
        children = descendants(first.proc.pid)
        assert children, "standalone should have started nats-server and the MongoDB wire server"
    finally:
        stop_s = first.stop()
    assert first.proc.returncode == 0, first.output()
    assert stop_s < 10, f"stopping took {stop_s:.1f} s"
    leftovers = [pid for pid in children if alive(pid)]
    assert not leftovers, f"processes left behind: {leftovers}"
    assert not processes_mentioning(str(data_dir)), processes_mentioning(str(data_dir))

    # A second boot on the same data dir finds the same guest namespace and key.
    second = Standalone(data_dir, port, workdir / "second.log")
    try:
        second.wait_ready()
        r = httpx.get(f"{second.url}/api/v1/namespaces", auth=GUEST_AUTH)
        assert r.json() == ["guest"]
        r = httpx.get(f"{second.url}/api/v1/namespaces", auth=tuple(persist_key.split(":", 1)))
        assert r.json() == ["persist"]
        asyncio.run(wait_stored(second.banner_value("MongoDB"), activation_id, deadline_s=5))
    finally:
        second.stop()
    assert second.proc.returncode == 0


def test_port_in_use_is_one_clear_line(workdir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = Standalone(workdir / "data", port, workdir / "busy.log")
        code = run.proc.wait(timeout=60)
    out = run.output()
    assert code == 1
    assert f"port {port}" in out and "in use" in out
    assert "Traceback" not in out
