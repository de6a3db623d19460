"""The issue-14 figures under an outside load generator (wrk): blocking invoke and fires, against a bare endpoint.

Run: .venv/bin/python bench/cores.py [--seconds 10] [--single-process] [--set event_loop=asyncio] [--set …]

Starts `squall standalone` (a temporary data dir; its role processes unless --single-process; `--set name=value`
passes SQUALL_<NAME>), creates a no-op Python action and a trigger with one rule on it, then drives it with
`wrk` (Debian's package; two threads, keep-alive) and prints:

- warm blocking invoke (`POST …/actions/noop?blocking=true`) at 32 and 16 connections: requests/s, p50/p99;
  at 1 connection: p50/p99;
- fires accepted (202) at 32 connections (every fire also runs the rule; they complete after the run);
- the floor: a bare Starlette endpoint answering 202 under uvicorn (bench/fire.py's), same wrk, same run;
- for each, the CPU the standalone's process tree spent per request, and the machine's load beforehand.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from processes import free_port, process_tree

BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
GUEST_KEY = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)
AUTH = "Basic " + base64.b64encode(GUEST_KEY.encode()).decode()
NOOP = "def main(args):\n    return {}\n"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float  # the server's process tree, per request


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: float, server_pid: int | None, body: str = "{}") -> Run:
    script = f"""
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{AUTH}"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        pids = process_tree(server_pid) if server_pid else []
        before = cpu_seconds(pids)
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(2, connections)),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--latency",
                "-s",
                lua.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        spent = cpu_seconds(pids) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Run(
        rate=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        p99_ms=ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in failed.groups()) if failed else 0),
        cpu_ms=1000 * spent / requests if requests and server_pid else 0.0,
    )


def wait_answering(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} during start-up")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {deadline_s} s")


@contextlib.contextmanager
def server(cmd: list[str], ready_url: str, settings: dict[str, str]) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")} | settings
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_answering(ready_url, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call(url: str, method: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": AUTH, "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).close()


def settle(url: str, seconds: float = 60) -> None:
    """Wait until a blocking invoke is quick again (the backlog a previous run left is worked off)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        call(f"{url}/api/v1/namespaces/_/actions/noop?blocking=true", "POST", {})
        if time.monotonic() - started < 0.02:
            return
        time.sleep(0.5)


def line(label: str, run: Run, extra: str = "") -> None:
    errors = f", {run.errors} errors" if run.errors else ""
    cpu = f", server CPU {run.cpu_ms:.2f} ms/req" if run.cpu_ms else ""
    print(
        f"{label:<34} {run.rate:9,.0f} /s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms{cpu}{errors}{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--single-process", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    settings = {}
    for item in args.set:
        name, _, value = item.partition("=")
        settings[f"SQUALL_{name.upper()}"] = value
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores; settings {settings}")

    floor_port = free_port()
    floor_cmd = [sys.executable, str(HERE / "fire.py"), "--serve-floor", str(floor_port)]
    floor_url = f"http://127.0.0.1:{floor_port}"
    with server(floor_cmd, floor_url + "/", {}) as floor_pid:
        wrk(f"{floor_url}/floor/t", 32, 2, None)
        floor = wrk(f"{floor_url}/floor/t", 32, args.seconds, floor_pid)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="squall-bench-cores-") as tmp:
        cmd = [str(BIN / "squall"), "standalone", "--api-port", str(port), "--data-dir", f"{tmp}/data"]
        cmd += ["--single-process"] if args.single_process else []
        with server(cmd, f"{url}/api/v1", settings) as pid:
            ns = f"{url}/api/v1/namespaces/_"
            call(f"{ns}/actions/noop", "PUT", {"exec": {"kind": "python:default", "code": NOOP}})
            call(f"{ns}/triggers/t", "PUT", {})
            call(f"{ns}/rules/r", "PUT", {"trigger": "t", "action": "noop"})
            invoke = f"{ns}/actions/noop?blocking=true"
            settle(url)
            wrk(invoke, 32, 2, None)  # warm-up: the pool grows to the concurrency
            results = {}
            for label, conns in (("warm blocking invoke, c=32", 32), ("warm blocking invoke, c=16", 16)):
                settle(url)
                results[label] = wrk(invoke, conns, args.seconds, pid)
            settle(url)
            results["warm blocking invoke, c=1"] = wrk(invoke, 1, args.seconds, pid)
            settle(url)
            results["fires accepted (202), c=32"] = wrk(f"{ns}/triggers/t", 32, args.seconds, pid)
    for label, run in results.items():
        line(label, run)
    fires = results["fires accepted (202), c=32"]
    line(
        "floor: bare Starlette 202, c=32",
        floor,
        f"   fires / floor = {fires.rate / floor.rate:.2f}",
    )
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
