"""Web actions: requests/s and latency of `GET /api/v1/web/…/{action}.json` against a blocking invoke of the
same action in the same run (the ratio is the figure).

Run: .venv/bin/python bench/web.py [--sequential 1000] [--seconds 5] [--concurrency 16]

It starts `squall standalone` on a free port with a temporary data dir (the guest key and its benchmark-sized
limits; the anonymous web limit raised out of the way), creates one web-exported no-op Python action and warms
it. The client runs in this process (bench/fire.py's lean keep-alive client). In one run it prints:

- sequential: one request at a time over one keep-alive connection, web and invoke alternating so both see the
  same machine: p50/p99 of an anonymous web request (`.json`) and of an authenticated blocking invoke
  (`POST …/actions/{name}?blocking=true&result=true`), and their ratio;
- throughput: `--concurrency` callers for `--seconds` each, web then invoke then web again (the two web runs
  bracket the invoke one): answers 200 per second, p50 under load, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from fire import BIN, Server, exchange, machine_busy, process
from processes import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.config import GUEST_KEY  # noqa: E402

ACTION = "bench-web-noop"
CODE = 'def main(args):\n    return {"ok": True}\n'
WEB_PATH = f"/api/v1/web/guest/default/{ACTION}.json"
INVOKE_PATH = f"/api/v1/namespaces/_/actions/{ACTION}?blocking=true&result=true"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def standalone() -> Iterator[Server]:
    """`squall standalone` on a free port and a temporary data dir, until the block ends."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="squall-bench-web-") as tmp:
        data_dir = Path(tmp) / "data"
        cmd = [str(BIN / "squall"), "standalone", "--api-port", str(port), "--data-dir", str(data_dir)]
        url = f"http://127.0.0.1:{port}"
        # Anonymous web requests are limited per namespace (600 a minute by default): not what is measured here.
        settings = {"SQUALL_WEB_REQUESTS_PER_MINUTE": "1000000000"}
        with process(cmd, f"{url}/api/v1", settings=settings) as pid:
            yield Server(url, GUEST_KEY, "", pid)


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def post_request(path: str, auth: str) -> bytes:
    body = b"{}"
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Client:
    """PUTs through one keep-alive connection, for the set-up."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        import http.client

        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=60)
        try:
            payload = json.dumps(body).encode() if body is not None else b""
            headers = {"Authorization": self.server.auth, "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            conn.close()


async def sequential(server: Server, n: int) -> tuple[list[float], list[float]]:
    """`n` web requests and `n` invokes, alternating, one at a time on one connection each."""
    web_conn = await asyncio.open_connection(server.host, server.port)
    invoke_conn = await asyncio.open_connection(server.host, server.port)
    web_request, invoke_request = get_request(WEB_PATH), post_request(INVOKE_PATH, server.auth)
    web, invoke = [], []
    clock = time.perf_counter
    try:
        for _ in range(n):
            for (reader, writer), request, samples in (
                (web_conn, web_request, web),
                (invoke_conn, invoke_request, invoke),
            ):
                started = clock()
                status, body = await exchange(reader, writer, request)
                samples.append(clock() - started)
                if status != 200 or json.loads(body) != {"ok": True}:
                    raise SystemExit(f"unexpected answer: HTTP {status} {body[:200]!r}")
    finally:
        for _, writer in (web_conn, invoke_conn):
            writer.close()
    return web, invoke


async def burst(server: Server, request: bytes, seconds: float, concurrency: int) -> tuple[float, float]:
    """`concurrency` callers for `seconds`: (answers 200 per second, p50 latency in s)."""
    loop = asyncio.get_running_loop()
    connections = [await asyncio.open_connection(server.host, server.port) for _ in range(concurrency)]
    latencies: list[float] = []
    failures: list[int] = []
    deadline = loop.time() + seconds

    async def caller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while loop.time() < deadline:
            started = time.perf_counter()
            status, _ = await exchange(reader, writer, request)
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures.append(status)

    started = loop.time()
    try:
        await asyncio.gather(*(caller(r, w) for r, w in connections))
    finally:
        for _, writer in connections:
            writer.close()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return len(latencies) / (loop.time() - started), statistics.median(latencies)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def measure(args: argparse.Namespace, server: Server) -> None:
    print(f"machine busy before the run: {machine_busy():.2f} cores (other work skews every figure)")
    api = Client(server)
    body = {
        "exec": {"kind": "python:default", "code": CODE},
        "annotations": [{"key": "web-export", "value": True}],
    }
    status, reply = api.call("PUT", f"/api/v1/namespaces/_/actions/{ACTION}?overwrite=true", body)
    if status != 200:
        raise SystemExit(f"PUT {ACTION}: HTTP {status} {reply}")
    await sequential(server, 50)  # the cold start, then let both paths settle
    web, invoke = await sequential(server, args.sequential)
    print(f"sequential, {args.sequential} each (one keep-alive connection per path):")
    for label, samples in (("web .json, anonymous", web), ("blocking invoke, result=true", invoke)):
        print(f"  {label:32s} p50 {ms(percentile(samples, 0.5))}  p99 {ms(percentile(samples, 0.99))}")
    ratio = percentile(web, 0.5) / percentile(invoke, 0.5)
    print(f"  web / invoke p50 ratio: {ratio:.2f}")

    web_request, invoke_request = get_request(WEB_PATH), post_request(INVOKE_PATH, server.auth)
    c, s = args.concurrency, args.seconds
    web_a = await burst(server, web_request, s, c)
    inv = await burst(server, invoke_request, s, c)
    web_b = await burst(server, web_request, s, c)
    print(f"throughput, {c} callers, {s:g} s each:")
    print(
        f"  web .json, anonymous            {web_a[0]:7.0f} /s, {web_b[0]:7.0f} /s  p50 {ms(web_a[1])}, {ms(web_b[1])}"
    )
    print(f"  blocking invoke, result=true    {inv[0]:7.0f} /s  p50 {ms(inv[1])}")
    print(f"  web / invoke rate ratio: {(web_a[0] + web_b[0]) / 2 / inv[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with standalone() as server:
        asyncio.run(measure(args, server))


if __name__ == "__main__":
    main()
