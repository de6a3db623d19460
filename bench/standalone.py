"""Boot time and idle memory of `squall standalone`, against the floor of its embedded servers alone.

Run: .venv/bin/python bench/standalone.py [--runs 3]
Prints: boot time to a first authenticated answer, and the ratio to the time the bare embedded servers
(nats-server, nx-27017) take to accept connections; the idle RSS of the whole process tree, and the ratio
to the RSS of those bare servers.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
GUEST = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502",
    "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [pid], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


def wait_port(port: int, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.005)
    raise TimeoutError(f"port {port} not open")


def floor_once(tmp: Path) -> tuple[float, float]:
    """Start the two embedded servers bare, in parallel; time until both accept, and their RSS."""
    np, mp = free_port(), free_port()
    t0 = time.monotonic()
    nats = subprocess.Popen(
        [BIN / "nats-server", "-js", "-a", "127.0.0.1", "-p", str(np), "-sd", tmp / "n"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mongo = subprocess.Popen(
        [
            BIN / "nx-27017",
            "--db",
            tmp / "m.db",
            "-p",
            str(mp),
            "--log-file",
            tmp / "m.log",
            "--pid-file",
            tmp / "m.pid",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(np)
        wait_port(mp)
        elapsed = time.monotonic() - t0
        time.sleep(2)
        return elapsed, rss_mib(tree(nats.pid) + tree(mongo.pid))
    finally:
        for p in (nats, mongo):
            p.terminate()
            p.wait(10)


def standalone_once(tmp: Path, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [BIN / "squall", "standalone", "--api-port", str(port), "--data-dir", tmp / "data", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/namespaces"
        while True:
            if proc.poll() is not None:
                raise RuntimeError("standalone exited during boot")
            try:
                if httpx.get(url, auth=GUEST, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.01)
        boot = time.monotonic() - t0
        time.sleep(3)  # idle: let start-up garbage settle before reading RSS
        return boot, rss_mib(tree(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--single-process", action="store_true", help="every role in one process")
    args = parser.parse_args()
    extra = ("--single-process",) if args.single_process else ()
    floors, boots = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            floors.append(floor_once(Path(d)))
        with tempfile.TemporaryDirectory() as d:
            boots.append(standalone_once(Path(d), extra))
    f_boot = statistics.median(b for b, _ in floors)
    f_rss = statistics.median(r for _, r in floors)
    s_boot = statistics.median(b for b, _ in boots)
    s_rss = statistics.median(r for _, r in boots)
    print(f"floor: bare nats-server + nx-27017 ready   {f_boot * 1000:8.0f} ms   RSS {f_rss:6.1f} MiB")
    print(
        f"squall standalone: first authed answer   {s_boot * 1000:8.0f} ms   RSS {s_rss:6.1f} MiB (whole tree)"
    )
    print(f"ratio to floor:                          {s_boot / f_boot:8.2f} x      {s_rss / f_rss:6.2f} x")


if __name__ == "__main__":
    main()
