"""Invoke latency and throughput through the API, against the floors of the proxy and of Podman underneath.

Run: .venv/bin/python bench/invoke.py [--warm 1000] [--cold 8] [--activations 5000] [--concurrency 32]
     .venv/bin/python bench/invoke.py --url http://127.0.0.1:3233 --key UUID:SECRET [--nats nats://…]
                                      (a running server with an invoker; --nats adds the JetStream-only run)

Without --url it starts a server of its own in a child process (temporary data dir, embedded NATS and MongoDB,
the guest key): the API on a free port, the activation recorder and one invoker agent with the container pool
(default settings: 2048 MB, stem cells `python:1,nodejs:1` of 256 MB). The client runs in this process.
In one run it prints:

- warm: blocking invoke of a no-op Python action, client → API → JetStream → invoker → container → JetStream →
  API → client, one request at a time over one keep-alive connection (p50/p99);
  floor: a raw `POST /run` to the same kind of proxy over its Unix socket (`bench/pool.py`'s `warm_floor`);
- cold, no stem cell: the first blocking invoke of a new action whose memory (128 MB) no stem cell has;
  cold, with a stem cell: the same for a 256 MB action while a stem cell is free (p50);
  floor: podman create + start + proxy listening (`bench/pool.py`'s `cold_floor`);
- throughput: non-blocking invokes of a no-op action from `--concurrency` callers, and the rate at which their
  activations are completed and stored in MongoDB (first request to last record stored); also the same with the
  invocations published straight to JetStream, which leaves out the HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.config import GUEST_KEY, Settings  # noqa: E402

NOOP_PY = "def main(args):\n    return {}\n"
KIND = "python:3.11"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f} ms"


# -- the server, in a child process ---------------------------------------------------------------------------


async def serve(data_dir: Path, port: int) -> None:
    """Everything an invoke needs, in this process: API, gateway, recorder, invoker, embedded servers."""
    from api.app import create_app
    from api.context import app_state
    from api.gateway import InvokeGateway
    from api.routes import invoke, invokers
    from api.server import ApiServer
    from broker.admin import ensure_namespace
    from runtimes.invoker import invoker_role
    from runtimes.podman_service import PodmanService
    from squall import roles
    from squall.embedded import EmbeddedMongo, EmbeddedNats

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        nats = await stack.enter_async_context(EmbeddedNats(data_dir / "nats"))
        mongo = await stack.enter_async_context(EmbeddedMongo(data_dir / "mongo"))
        settings = Settings(nats_url=nats.url, mongodb_uri=mongo.uri, data_dir=data_dir, api_port=port)
        await stack.enter_async_context(PodmanService(settings))
        backbone = await stack.enter_async_context(roles.Backbone(settings))
        await ensure_namespace(backbone.store, settings.guest_namespace, settings.guest_key)
        await stack.enter_async_context(roles.broker_role(settings, backbone))
        app = create_app(settings, backbone.store, backbone.activations)
        present = {id(getattr(r, "endpoint", None)) for r in app.router.routes}
        app.router.routes.extend(
            r for r in (*invoke.routes, *invokers.routes) if id(r.endpoint) not in present
        )
        app_state(app).gateway = await stack.enter_async_context(InvokeGateway(backbone.bus))
        await stack.enter_async_context(ApiServer(app, settings.api_host, port))
        await stack.enter_async_context(invoker_role(settings, backbone.bus, backbone.store))
        print(json.dumps({"nats": nats.url}), flush=True)
        await stop.wait()


@contextlib.contextmanager
def server() -> Iterator[tuple[str, str, str]]:
    """A server of our own: (API url, key, NATS url)."""
    from squall.embedded import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="squall-bench-") as data_dir:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", data_dir, str(port)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("the bench server did not start")
            yield f"http://127.0.0.1:{port}", GUEST_KEY, json.loads(line)["nats"]
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- the client -----------------------------------------------------------------------------------------------


class Api:
    """A minimal blocking client (one keep-alive connection): little of the latency is the client's own."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.auth = "Basic " + base64.b64encode(key.encode()).decode()
        self.conn = http.client.HTTPConnection(self.host, self.port)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        headers = {"Authorization": self.auth, "Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, json.loads(data) if data else None
            except (http.client.RemoteDisconnected, ConnectionError):
                # The server closes idle keep-alive connections (uvicorn: after 5 s).
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def put_action(self, name: str, memory: int = 256) -> None:
        body = {"exec": {"kind": KIND, "code": NOOP_PY}, "limits": {"memory": memory}}
        status, reply = self.call("PUT", f"/api/v1/namespaces/_/actions/{name}?overwrite=true", body)
        assert status == 200, reply

    def invoke(self, name: str) -> float:
        started = time.perf_counter()
        status, reply = self.call("POST", f"/api/v1/namespaces/_/actions/{name}?blocking=true", {})
        elapsed = time.perf_counter() - started
        assert status == 200, reply
        return elapsed

    def count(self, name: str) -> int:
        status, reply = self.call("GET", f"/api/v1/namespaces/_/activations?count=true&name={name}")
        assert status == 200, reply
        return int(reply["activations"])

    def wait_for_invoker(self, deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            status, reply = self.call("GET", "/invokers")
            if status == 200 and "up" in reply.values():
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"no invoker is up: {reply}")
            time.sleep(0.2)


def warm(api: Api, n: int) -> list[float]:
    name = f"warm-{uuid.uuid4().hex[:6]}"
    api.put_action(name)
    for _ in range(50):  # the cold start, then let both ends settle
        api.invoke(name)
    return [api.invoke(name) for _ in range(n)]


def cold(api: Api, n: int, memory: int, pause_s: float) -> list[float]:
    """First invokes of new actions; `pause_s` lets the pool replace the stem cell a run consumed."""
    samples = []
    for i in range(n):
        time.sleep(pause_s)
        name = f"cold{memory}-{uuid.uuid4().hex[:6]}-{i}"
        api.put_action(name, memory)
        samples.append(api.invoke(name))
    return samples


async def throughput_api(url: str, key: str, name: str, total: int, concurrency: int) -> tuple[float, float]:
    """(accepted/s, completed-and-stored/s) of `total` non-blocking invokes from `concurrency` callers.

    The callers write a prepared HTTP/1.1 request on keep-alive connections and read only the status line and
    Content-Length: a general-purpose client (httpx) costs a core of its own at these rates, on a machine
    whose two cores the server needs.
    """
    api = Api(url, key)
    stored_before = api.count(name)
    request = (
        f"POST /api/v1/namespaces/_/actions/{name} HTTP/1.1\r\nHost: bench\r\nAuthorization: {api.auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    ).encode()
    left = 0

    async def caller() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection(api.host, api.port)
        try:
            while left > 0:
                left -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 202"):
                    raise SystemExit(f"invoke refused: {head[:200]!r}")
                length = next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
                await reader.readexactly(int(length.split(b":")[1]))
        finally:
            writer.close()

    async def burst(count: int, stored_before: int) -> tuple[float, float]:
        nonlocal left
        left = count
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        accepted = time.perf_counter() - started
        stored = await _until_stored(api, name, stored_before + count, started)
        return count / accepted, count / stored

    # A first burst brings up every container the invoker will use, so the measured rate is a warm one.
    warmup = min(1000, total)
    await burst(warmup, stored_before)
    return await burst(total, stored_before + warmup)


async def throughput_jetstream(url: str, key: str, nats_url: str, name: str, total: int) -> float:
    """Completed-and-stored/s of `total` invocations published straight to JetStream (no HTTP API)."""
    from broker import codec, subjects
    from broker.activations import new_activation_id
    from broker.bus import JetStreamBus, Outgoing
    from broker.config import GUEST_NAMESPACE
    from broker.health import now_ms
    from broker.invocations import Invocation

    api = Api(url, key)
    stored_before = api.count(name)
    subject = subjects.invoke_subject(GUEST_NAMESPACE, name)
    async with JetStreamBus(Settings(nats_url=nats_url)) as bus:
        started = time.perf_counter()
        batch: list[Outgoing] = []
        for _ in range(total):
            aid = new_activation_id()
            inv = Invocation(
                activationId=aid,
                namespace=GUEST_NAMESPACE,
                action=f"{GUEST_NAMESPACE}/{name}",
                published=now_ms(),
            )
            batch.append(Outgoing(subject=subject, payload=codec.encode(inv), msg_id=aid))
            if len(batch) == 500:
                await bus.publish_many(batch)
                batch = []
        if batch:
            await bus.publish_many(batch)
        stored = await _until_stored(api, name, stored_before + total, started)
    return total / stored


async def _until_stored(api: Api, name: str, expected: int, started: float, deadline_s: float = 300) -> float:
    while True:
        count = await asyncio.to_thread(api.count, name)
        if count >= expected:
            return time.perf_counter() - started
        if time.perf_counter() - started > deadline_s:
            raise SystemExit(f"only {count} of {expected} activations stored after {deadline_s} s")
        await asyncio.sleep(0.05)


async def floors(kind: str, warm_n: int, cold_n: int) -> tuple[list[float], list[float]]:
    from bench.pool import cold_floor, warm_floor

    settings = Settings.from_env()
    raw, _, _ = await warm_floor(settings, kind, warm_n)
    return raw, await cold_floor(settings, kind, cold_n)


def report(name: str, samples: list[float], floor: list[float] | None = None, p99: bool = True) -> None:
    text = f"{name:<58} p50 {ms(percentile(samples, 0.5))}"
    if p99:
        text += f"   p99 {ms(percentile(samples, 0.99))}"
    text += f"   n={len(samples)}"
    if floor:
        text += f"   x{percentile(samples, 0.5) / statistics.median(floor):.1f} of the floor"
    print(text)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (with an invoker) instead of our own")
    parser.add_argument("--key", default=GUEST_KEY, help="with --url: uuid:secret")
    parser.add_argument("--nats", help="with --url: its NATS URL, for the JetStream-only throughput")
    parser.add_argument("--warm", type=int, default=1000, help="warm samples")
    parser.add_argument("--cold", type=int, default=8, help="cold samples of each kind")
    parser.add_argument("--activations", type=int, default=5000, help="activations of the throughput runs")
    parser.add_argument("--concurrency", type=int, default=32, help="callers of the API throughput run")
    parser.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(Path(args.serve[0]), int(args.serve[1]))
        return
    from runtimes.podman_service import PodmanService

    # One engine service for the whole run: the floors and the server's pool share it.
    async with PodmanService(Settings.from_env()):
        await measure(args)


async def measure(args: argparse.Namespace) -> None:
    raw_floor, cold_floor_samples = await floors(KIND, args.warm, args.cold)
    with contextlib.ExitStack() as stack:
        if args.url:
            url, key, nats_url = args.url, args.key, args.nats
        else:
            url, key, nats_url = stack.enter_context(server())
        api = Api(url, key)
        await asyncio.to_thread(api.wait_for_invoker)
        warm_samples = await asyncio.to_thread(warm, api, args.warm)
        no_stem = await asyncio.to_thread(cold, api, args.cold, 128, 0.5)
        with_stem = await asyncio.to_thread(cold, api, args.cold, 256, 2.0)
        name = f"tput-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(api.put_action, name)
        accepted, completed = await throughput_api(url, key, name, args.activations, args.concurrency)
        direct = None
        if nats_url:
            direct = await throughput_jetstream(url, key, nats_url, name, args.activations)
    cores = os.cpu_count()
    print(f"\ninvoke, {KIND} no-op action, {cores} cores")
    report("warm floor: raw POST /run to the proxy over its Unix socket", raw_floor)
    report("warm: blocking invoke, client -> API -> invoker -> client", warm_samples, raw_floor)
    report("cold floor: podman create + start + proxy listening", cold_floor_samples)
    report("cold, no stem cell (128 MB action)", no_stem, cold_floor_samples, p99=False)
    report("cold, with a stem cell (256 MB action)", with_stem, cold_floor_samples, p99=False)
    print(f"{'throughput via the API: accepted (202)':<58} {accepted:8.0f} /s   ({args.concurrency} callers)")
    print(f"{'throughput via the API: completed and stored':<58} {completed:8.0f} /s   ({args.activations})")
    if direct is not None:
        print(
            f"{'throughput from JetStream: completed and stored':<58} {direct:8.0f} /s   ({args.activations})"
        )


if __name__ == "__main__":
    asyncio.run(main())
