"""The container pool's cold and warm run latency, against the floors of the engine and of the proxy underneath.

Run: .venv/bin/python bench/pool.py [--kind python:3.11] [--warm 2000] [--cold 10]

Needs the rootless Podman set-up (`make setup`); runs as root or as the engine's user. In one run it measures:

- warm floor: a raw `POST /run` of a no-op action to the proxy over its Unix socket, with a blocking socket and
  no framework at all; and the same over `runtimes.uds_http` (the pool's client);
- warm: `ContainerPool.run` of the same no-op action in its warm container (includes `POST /logs`, sent along
  with `/run` in one write);
- cold floor: create + start a container with the pool's spec, until its proxy accepts a connection;
- cold: `ContainerPool.run` of a new action with no stem cell (new container + /init + /run), and with a free
  stem cell (/init + /run only);
- throughput: warm runs/s of `--concurrency` callers on one action (one container each), for `--seconds`.

Prints p50/p99 (ms) and the ratio of each pool figure to its floor. `bench/invoke.py` reuses the floors:
`cold_floor(settings, kind, n)` and `warm_floor(settings, kind, n)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
import uuid

from broker.config import Settings
from broker.kinds import image_family
from runtimes.contract import InitPayload, RunPayload, RunRequest
from runtimes.podman_backend import PodmanBackend
from runtimes.pool import ContainerPool, PoolSettings
from runtimes.uds_http import UdsConnection

NOOP = {
    "python": "def main(args):\n    return {}\n",
    "nodejs": "function main(params) { return {} }",
}
RUN_BODY = json.dumps(
    {
        "value": {},
        "namespace": "bench",
        "action_name": "/bench/noop",
        "action_version": "0.0.1",
        "activation_id": "0" * 32,
        "transaction_id": "bench",
        "deadline": "0",
    },
    separators=(",", ":"),
).encode()


def noop_request(kind: str, key: str) -> RunRequest:
    return RunRequest(
        pool_key=key,
        kind=kind,
        memory_mb=256,
        timeout_ms=60_000,
        log_limit_bytes=10 * 1024 * 1024,
        init=InitPayload(name="noop", code=NOOP[image_family(kind)]),
        run=RunPayload(
            value={},
            namespace="bench",
            action_name="/bench/noop",
            action_version="0.0.1",
            activation_id=uuid.uuid4().hex,
            transaction_id="bench",
            deadline="0",
        ),
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _blocking_round_trips(path: str, n: int) -> list[float]:
    """The floor of a warm run: HTTP/1.1 keep-alive on a plain blocking socket, parsing only Content-Length."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    request = b"POST /run HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(RUN_BODY), RUN_BODY)
    samples = []
    buffer = b""
    for _ in range(n):
        started = time.perf_counter()
        sock.sendall(request)
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
        samples.append(time.perf_counter() - started)
    sock.close()
    return samples


async def warm_floor(settings: Settings, kind: str, n: int) -> tuple[list[float], list[float], list[float]]:
    """Round trips of a no-op /run to one initialized proxy: over a raw blocking socket (the floor), over the
    pool's asyncio client, and the same with /logs taken along in the same write (what the pool does per run)."""
    family = image_family(kind)
    async with PodmanBackend(settings, f"benchw{uuid.uuid4().hex[:6]}") as backend:
        container = await backend.start(family, 256, 20000)
        try:
            conn = await backend.connect(container, 10)
            init = json.dumps({"value": {"name": "noop", "code": NOOP[family]}}).encode()
            status, body = await conn.post("/init", init, 10)
            assert status == 200, body
            for _ in range(100):  # warm up both ends
                await conn.post("/run", RUN_BODY, 10)
            await conn.post("/logs", b"{}", 10)
            asyncio_samples = []
            for _ in range(n):
                started = time.perf_counter()
                await conn.post("/run", RUN_BODY, 10)
                asyncio_samples.append(time.perf_counter() - started)
            with_logs = []
            for _ in range(n):
                started = time.perf_counter()
                await conn.post("/run", RUN_BODY, 10, then=("/logs", b"{}"))
                await conn.next_reply(10)
                with_logs.append(time.perf_counter() - started)
            await conn.close()
            raw = await asyncio.to_thread(_blocking_round_trips, container.socket_path, n)
        finally:
            await backend.destroy(container)
    return raw, asyncio_samples, with_logs


async def cold_floor(settings: Settings, kind: str, n: int) -> list[float]:
    """Create + start a container with the pool's spec until its proxy accepts a connection."""
    family = image_family(kind)
    samples = []
    async with PodmanBackend(settings, f"benchc{uuid.uuid4().hex[:6]}") as backend:
        for i in range(n):
            started = time.perf_counter()
            container = await backend.start(family, 256, 20000 + i)
            conn: UdsConnection = await backend.connect(container, 10)
            samples.append(time.perf_counter() - started)
            await conn.close()
            await backend.destroy(container)
    return samples


async def throughput(pool: ContainerPool, request: RunRequest, concurrency: int, seconds: float) -> float:
    """Runs/s of `concurrency` callers looping on one action (one warm container each) for `seconds`."""
    await asyncio.gather(*(pool.run(request) for _ in range(concurrency)))  # start the containers
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            outcome = await pool.run(request)
            assert outcome.status == 200, outcome
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def pool_figures(
    settings: Settings, kind: str, warm_n: int, cold_n: int, concurrency: int = 4, seconds: float = 3.0
) -> dict[str, list[float]]:
    family = image_family(kind)
    figures: dict[str, list[float]] = {"cold": [], "stem": [], "warm": []}
    config = PoolSettings(prewarm="")
    async with ContainerPool(settings, f"benchp{uuid.uuid4().hex[:6]}", config) as pool:
        for _ in range(cold_n):
            started = time.perf_counter()
            outcome = await pool.run(noop_request(kind, f"bench/cold-{uuid.uuid4().hex}@1"))
            figures["cold"].append(time.perf_counter() - started)
            assert outcome.status == 200 and outcome.cold, outcome
        key = "bench/warm@1"
        for _ in range(100):
            await pool.run(noop_request(kind, key))
        request = noop_request(kind, key)
        for _ in range(warm_n):
            started = time.perf_counter()
            await pool.run(request)
            figures["warm"].append(time.perf_counter() - started)
        figures["throughput"] = [await throughput(pool, request, concurrency, seconds)]
    config = PoolSettings(prewarm=f"{family}:1")
    async with ContainerPool(settings, f"benchs{uuid.uuid4().hex[:6]}", config) as pool:
        for _ in range(cold_n):
            deadline = time.monotonic() + 30
            while pool.stats().stem < 1:
                if time.monotonic() > deadline:
                    raise SystemExit("no stem cell came up in 30 s")
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            outcome = await pool.run(noop_request(kind, f"bench/stem-{uuid.uuid4().hex}@1"))
            figures["stem"].append(time.perf_counter() - started)
            assert outcome.status == 200 and outcome.cold, outcome
    return figures


def line(name: str, samples: list[float], floor: list[float] | None = None) -> str:
    p50, p99 = percentile(samples, 0.5) * 1000, percentile(samples, 0.99) * 1000
    text = f"{name:<50} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   n={len(samples)}"
    if floor:
        text += f"   x{p50 / (statistics.median(floor) * 1000):.2f} of the floor's p50"
    return text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="python:3.11")
    parser.add_argument("--warm", type=int, default=2000, help="warm samples")
    parser.add_argument("--cold", type=int, default=10, help="cold samples of each kind")
    parser.add_argument("--concurrency", type=int, default=4, help="callers (and containers) for throughput")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of the throughput run")
    args = parser.parse_args()
    settings = Settings.from_env()
    raw, uds, uds_logs = await warm_floor(settings, args.kind, args.warm)
    cold = await cold_floor(settings, args.kind, args.cold)
    figures = await pool_figures(settings, args.kind, args.warm, args.cold, args.concurrency, args.seconds)
    print(f"\ncontainer pool, {args.kind}, no-op action")
    print(line("warm floor: raw /run over the Unix socket", raw))
    print(line("warm: runtimes.uds_http /run only", uds, raw))
    print(line("warm: runtimes.uds_http /run + /logs pipelined", uds_logs, raw))
    print(line("warm: ContainerPool.run (/run + /logs)", figures["warm"], raw))
    print(line("cold floor: create + start + proxy listening", cold))
    print(line("cold with a stem cell: /init + /run", figures["stem"], cold))
    print(line("cold, no stem cell: new container + /init + /run", figures["cold"], cold))
    print(
        f"{'throughput: ContainerPool.run, ' + str(args.concurrency) + ' callers':<50} "
        f"{figures['throughput'][0]:8.0f} runs/s"
    )


if __name__ == "__main__":
    asyncio.run(main())
