"""Entity GET and PUT requests/s of the API at concurrency 16, against the floor of a bare Starlette endpoint.

Run: .venv/bin/python bench/api.py [--seconds 5] [--concurrency 16] [--entity actions]
     .venv/bin/python bench/api.py --url http://127.0.0.1:3233 --key UUID:SECRET   (a running server)

Without --url it starts `squall standalone` on a free port with a temporary data dir (embedded NATS and
MongoDB, the guest key). In the same run it starts a bare Starlette app under uvicorn in its own process,
whose GET answers a fixed entity document and whose PUT decodes and echoes the body: the floor, what the
same httpx client gets from the same server stack with no auth, no store and no validation.

Prints, for each: requests/s, latency percentiles, and the CPU the server's process tree spent per request
(the standalone's includes its nats-server and nx-27017; with --url, give --pid to measure it). On a small machine the client
can be the bottleneck of both, so the throughput ratio alone can hide a costlier server: the CPU per
request shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from processes import free_port, process_tree

BIN = Path(sys.executable).parent
GUEST_KEY = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)
# What each entity kind is PUT with; small, like most real entities.
BODIES: dict[str, dict[str, object]] = {
    "actions": {
        "exec": {"kind": "python:default", "code": "def main(args):\n    return {'greeting': 'hello'}\n"},
        "parameters": [{"key": "name", "value": "bench"}],
    },
    "triggers": {"parameters": [{"key": "name", "value": "bench"}]},
    "packages": {"parameters": [{"key": "name", "value": "bench"}]},
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass
class Result:
    requests: int = 0
    seconds: float = 0.0
    server_cpu_s: float | None = None
    latencies: list[float] = field(default_factory=list)
    errors: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        if self.server_cpu_s is None or not self.requests:
            return float("nan")
        return self.server_cpu_s / self.requests * 1000

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100)[p - 1] * 1000


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process and its descendants, from /proc (Linux)."""
    if pid is None:
        return None
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode} during start-up")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {deadline_s} s")


@contextlib.contextmanager
def process(cmd: list[str], ready_url: str) -> Iterator[int]:
    """Run a server until the block ends; yields its pid once `ready_url` answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(ready_url, proc)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the floor: a bare Starlette app in its own process, like the API --------------------------------------

FLOOR_DOCUMENT = (
    b'{"namespace":"guest","name":"bench","version":"0.0.1","publish":false,'
    b'"annotations":[{"key":"exec","value":"python:3.11"},{"key":"provide-api-key","value":false}],'
    b'"updated":1700000000000,"exec":{"kind":"python:3.11","code":"def main(args):\\n    return '
    b'{\'greeting\': \'hello\'}\\n","binary":false},"parameters":[{"key":"name","value":"bench"}],'
    b'"limits":{"timeout":60000,"memory":256,"logs":10,"concurrency":1}}'
)


def serve_floor(port: int) -> None:
    import msgspec
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response
    from starlette.routing import Route

    async def get(request: StarletteRequest) -> Response:
        return Response(FLOOR_DOCUMENT, media_type="application/json")

    async def put(request: StarletteRequest) -> Response:
        body = msgspec.json.decode(await request.body())
        return Response(msgspec.json.encode(body), media_type="application/json")

    app = Starlette(
        routes=[Route("/floor/{name}", get, methods=["GET"]), Route("/floor/{name}", put, methods=["PUT"])]
    )
    # The uvicorn options api/server.py uses, so the two servers differ in the application only.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
    )


# --- the load -------------------------------------------------------------------------------------------


async def load(
    client: httpx.AsyncClient, request: Request, seconds: float, concurrency: int, server_pid: int | None
) -> Result:
    """`concurrency` workers each sending one request at a time until the deadline."""
    result = Result()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker(index: int) -> None:
        while loop.time() < deadline:
            started = time.perf_counter()
            response = await request(client, index)
            elapsed = time.perf_counter() - started
            if response.status_code == 200:
                result.latencies.append(elapsed)
            else:
                result.errors[response.status_code] += 1
            result.requests += 1

    cpu_before = cpu_seconds(server_pid)
    started = loop.time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.seconds = loop.time() - started
    cpu_after = cpu_seconds(server_pid)
    if cpu_before is not None and cpu_after is not None:
        result.server_cpu_s = cpu_after - cpu_before
    return result


@dataclass(frozen=True)
class Target:
    base_url: str
    auth: tuple[str, str] | None
    get_path: str
    put_path: str  # with `{index}`: one entity per worker, since 16 writers of one entity mostly get 409s
    pid: int | None


async def bench(target: Target, body: object, args: argparse.Namespace) -> dict[str, Result]:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(
        base_url=target.base_url, auth=target.auth, limits=limits, timeout=30
    ) as client:

        async def do_get(c: httpx.AsyncClient, index: int) -> httpx.Response:
            return await c.get(target.get_path)

        async def do_put(c: httpx.AsyncClient, index: int) -> httpx.Response:
            return await c.put(target.put_path.format(index=index), json=body)

        results = {}
        for name, request in (("GET", do_get), ("PUT", do_put)):
            await load(client, request, args.warmup, args.concurrency, None)
            results[name] = await load(client, request, args.seconds, args.concurrency, target.pid)
        return results


def prepare(base_url: str, auth: tuple[str, str], entity: str, pid: int | None) -> Target:
    """Create the entity the GETs read (a 200 proves the key and the route work)."""
    prefix = f"/api/v1/namespaces/_/{entity}"
    r = httpx.put(f"{base_url}{prefix}/bench?overwrite=true", json=BODIES[entity], auth=auth, timeout=30)
    if r.status_code != 200:
        raise SystemExit(f"cannot create {prefix}/bench: HTTP {r.status_code} {r.text}")
    return Target(base_url, auth, f"{prefix}/bench", prefix + "/bench-{index}?overwrite=true", pid)


def report(squall: dict[str, Result], floor: dict[str, Result], args: argparse.Namespace) -> None:
    print(f"concurrency {args.concurrency}, {args.seconds:g} s per measurement, entity: {args.entity}")
    print(f"{'':30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU ms/req':>16}  errors")
    for op in ("GET", "PUT"):
        s, f = squall[op], floor[op]
        for label, res in ((f"squall {op}", s), (f"floor  {op} (bare Starlette)", f)):
            errors = dict(res.errors) or "-"
            print(
                f"{label:30}{res.rate:9.0f}{res.percentile(50):9.2f}{res.percentile(99):9.2f}"
                f"{res.cpu_ms_per_request:16.2f}  {errors}"
            )
        ratio = s.rate / f.rate if f.rate else float("nan")
        cpu_ratio = s.cpu_ms_per_request / f.cpu_ms_per_request
        print(f"{'ratio squall/floor ' + op:30}{ratio:9.2f}{'':18}{cpu_ratio:16.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running Squall API (default: start `squall standalone`)")
    parser.add_argument("--key", default=GUEST_KEY, help="uuid:secret of a namespace on --url")
    parser.add_argument("--pid", type=int, help="pid of the server at --url, to measure its CPU per request")
    parser.add_argument("--entity", choices=sorted(BODIES), default="actions")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return

    uuid, _, secret = args.key.partition(":")
    auth = (uuid, secret)
    floor_port = free_port()
    floor_url = f"http://127.0.0.1:{floor_port}"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        squall_pid = args.pid
        if args.url:
            base_url = args.url.rstrip("/")
        else:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            cmd = [str(BIN / "squall"), "standalone", "--api-port", str(port), "--data-dir", f"{tmp}/data"]
            squall_pid = stack.enter_context(process(cmd, f"{base_url}/api/v1"))
        floor_cmd = [sys.executable, __file__, "--serve-floor", str(floor_port)]
        floor_pid = stack.enter_context(process(floor_cmd, f"{floor_url}/floor/x"))
        target = prepare(base_url, auth, args.entity, squall_pid)
        floor_target = Target(floor_url, None, "/floor/bench", "/floor/bench-{index}", floor_pid)
        squall = asyncio.run(bench(target, BODIES[args.entity], args))
        floor = asyncio.run(bench(floor_target, BODIES[args.entity], args))
    report(squall, floor, args)


if __name__ == "__main__":
    main()
