"""Live activation streams: record published → received by an SSE client, p50/p99, and the API's memory per stream.

Run: .venv/bin/python bench/stream.py [--seconds 3] [--rates 200,2000] [--subscribers 1,100]

It starts an embedded nats-server and MongoDB wire server (temporary dirs) and the API in a child process (so
that its memory is its own), creates a namespace, and for each rate and number of subscribers: opens that many
`GET …/activations/stream` connections (lean SSE clients on raw sockets, in this process), publishes records to
ACTIVATIONS at the rate (pipelined, as the invoker does) for `--seconds`, and measures, for every record and
every subscriber, from just before its publish to the moment its event is parsed. Floor, in the same run: the
same records to a core NATS subscriber on `activation.<ns>.>` (raw JetStream publish → raw receive). Memory: the
API process's RSS with 100 idle open streams against none, per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker import codec, subjects  # noqa: E402
from broker.activations import SUCCESS, Activation, make_response, new_activation_id  # noqa: E402
from broker.bus import JetStreamBus  # noqa: E402
from broker.config import Settings  # noqa: E402

NAMESPACE = "bench-stream"


async def serve(nats_url: str, mongo_uri: str) -> None:
    """The child: the API role's app on a free port; prints `READY <port> <key>`."""
    from api.app import create_app
    from api.context import app_state
    from api.server import ApiServer
    from broker.admin import create_namespace
    from squall.roles import Backbone

    # SQUALL_* variables apply (e.g. SQUALL_STREAM_WINDOW).
    settings = Settings.from_env(nats_url=nats_url, mongodb_uri=mongo_uri, streams_per_namespace=1000)
    async with Backbone(settings) as backbone:
        key = await create_namespace(backbone.store, NAMESPACE)
        app = create_app(settings, backbone.store, backbone.activations)
        async with ApiServer(app, "127.0.0.1", 0) as server:
            print(f"READY {server.port} {key}", flush=True)
            hub = app_state(app).streams
            # Each line on stdin asks for the streams' counters so far; the end of stdin stops the server.
            while await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline):
                counters = {
                    "catch_ups": getattr(hub, "catch_ups", 0),
                    "stalled": hub.stalled,
                    "most_held": hub.most_held,
                }
                print(msgspec.json.encode(counters).decode(), flush=True)
            hub.close()


def record(sent: float) -> Activation:
    now = int(time.time() * 1000)
    return Activation(
        namespace=NAMESPACE,
        name="a",
        subject=NAMESPACE,
        activationId=new_activation_id(),
        start=now,
        end=now,
        duration=0,
        response=make_response(SUCCESS, {"sent": sent}),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=[],
    )


class _Result(msgspec.Struct):
    sent: float


class _Response(msgspec.Struct):
    result: _Result


class _Sent(msgspec.Struct):
    response: _Response


_DECODE = msgspec.json.Decoder(_Sent).decode


class Subscriber(asyncio.Protocol):
    """A lean SSE client: one GET, then the events parsed for the record's send time.

    A bare protocol parsing in `data_received` (no reader task to wake per chunk), whole reads split into events
    and only the send time decoded: with a task, readline and a full JSON decode per line, the bench's 100
    clients, not the server, were the bottleneck at 20,000 events/s. An event never spans two HTTP chunks (the
    server writes whole events), so the chunk framing only sits between events.
    """

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.latencies: list[float] = []
        self.received = 0
        self._transport: asyncio.Transport | None = None
        self._status: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._rest = b""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: self, "127.0.0.1", self.port)
        auth = base64.b64encode(self.key.encode()).decode()
        path = f"/api/v1/namespaces/{NAMESPACE}/activations/stream"
        transport.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
        self._transport = transport
        status = await self._status
        assert b" 200 " in status, status

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self._status.done():
            self._status.set_result(data.split(b"\r\n", 1)[0])
        *events, self._rest = (self._rest + data).split(b"\n\n")
        for event in events:
            at = event.find(b"data: ")
            if at >= 0:
                self.latencies.append(now - _DECODE(event[at + 6 :]).response.result.sent)
                self.received += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._status.done():
            self._status.set_result(b"connection lost")

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def cpu_s(pid: int) -> float:
    """The process's CPU time so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def publish_at(bus: JetStreamBus, rate: int, seconds: float) -> int:
    """Publish records at `rate`/s for `seconds`, pipelined; the send time is in each record."""
    subject = subjects.activation_subject(NAMESPACE, "a")
    start, sent, acks = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            acks.append(await bus.publish_async(subject, codec.encode(record(time.perf_counter()))))
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*acks)
    return sent


async def wait_for(subscribers: list[Subscriber], expected: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while any(s.received < expected for s in subscribers) and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> None:
    from squall.embedded import EmbeddedMongo, EmbeddedNats

    with tempfile.TemporaryDirectory() as tmp:
        async with (
            EmbeddedNats(Path(tmp) / "nats") as nats_server,
            EmbeddedMongo(Path(tmp) / "mongo") as mongo,
        ):
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            child = subprocess.Popen(  # noqa: ASYNC220 (once, at start)
                [sys.executable, __file__, "--serve", nats_server.url, mongo.uri],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
            assert child.stdout is not None and child.stdin is not None
            ready = await asyncio.to_thread(child.stdout.readline)
            _, port_text, key = ready.split()
            port = int(port_text)
            try:
                async with JetStreamBus(Settings(nats_url=nats_server.url)) as bus:
                    await measure(bus, port, key, child, args)
            finally:
                child.stdin.close()
                child.wait(10)


async def counters(child: subprocess.Popen[str]) -> dict[str, int]:
    """The API's stream counters (catch-up readers run, clients cut off, most records held), after streams end."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("counters\n")
    child.stdin.flush()
    found: dict[str, int] = msgspec.json.decode(await asyncio.to_thread(child.stdout.readline))
    return found


async def measure(
    bus: JetStreamBus, port: int, key: str, child: subprocess.Popen[str], args: argparse.Namespace
) -> None:
    pid = child.pid
    # Memory first, on a fresh process (later runs leave its heap grown): 100 idle streams against none.
    before = rss_kb(pid)
    idle = [Subscriber(port, key) for _ in range(100)]
    await asyncio.gather(*(s.open() for s in idle))
    await asyncio.sleep(1.0)
    after = rss_kb(pid)
    await bus.publish(subjects.activation_subject(NAMESPACE, "a"), codec.encode(record(time.perf_counter())))
    await wait_for(idle, 1, 10)
    busy = rss_kb(pid)
    print(
        f"API RSS: {before} kB with no stream, {after} kB with 100 idle streams "
        f"({(after - before) / 100:.1f} kB per stream), {busy} kB after one record reached all of them"
    )
    await asyncio.gather(*(s.close() for s in idle))
    seen = await counters(child)
    rates = [int(r) for r in args.rates.split(",")]
    counts = [int(c) for c in args.subscribers.split(",")]
    print(
        f"{'rate/s':>7} {'subs':>5} {'p50 ms':>8} {'p99 ms':>8} {'floor p50':>10} {'floor p99':>10} "
        f"{'x p50':>6} {'x p99':>6} {'received':>13} {'API CPU':>8} {'us/event':>8} {'catch-ups':>9} {'cut off':>7} {'bench CPU':>9}"
    )
    for rate in rates:
        for count in counts:
            floor: list[float] = []

            async def on_floor(msg: object, floor: list[float] = floor) -> None:
                sent = msgspec.json.decode(msg.data)["response"]["result"]["sent"]  # type: ignore[attr-defined]
                floor.append(time.perf_counter() - sent)

            sub = await bus.nc.subscribe(subjects.activation_filter(NAMESPACE), cb=on_floor)
            subscribers = [Subscriber(port, key) for _ in range(count)]
            await asyncio.gather(*(s.open() for s in subscribers))
            await asyncio.sleep(0.5)  # the streams' consumers exist (they start with the next new record)
            cpu_before, own_before = cpu_s(pid), cpu_s(os.getpid())
            sent = await publish_at(bus, rate, args.seconds)
            await wait_for(subscribers, sent, 30)
            cpu, own = cpu_s(pid) - cpu_before, cpu_s(os.getpid()) - own_before
            await sub.unsubscribe()
            latencies = [x for s in subscribers for x in s.latencies]
            received = sum(s.received for s in subscribers)
            p50, p99, f50, f99 = pct(latencies, 0.5), pct(latencies, 0.99), pct(floor, 0.5), pct(floor, 0.99)
            await asyncio.gather(*(s.close() for s in subscribers))
            await asyncio.sleep(1.0)
            now = await counters(child)
            print(
                f"{rate:>7} {count:>5} {p50:>8.2f} {p99:>8.2f} {f50:>10.2f} {f99:>10.2f} "
                f"{p50 / f50:>6.1f} {p99 / f99:>6.1f} {f'{received}/{sent * count}':>13} {cpu:>7.2f}s "
                f"{cpu / max(received, 1) * 1e6:>8.1f} {now['catch_ups'] - seen['catch_ups']:>9} "
                f"{now['stalled'] - seen['stalled']:>7} {own:>8.2f}s",
                flush=True,
            )
            seen = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="200,2000")
    parser.add_argument("--subscribers", default="1,100")
    parser.add_argument("--serve", nargs=2, metavar=("NATS_URL", "MONGODB_URI"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
