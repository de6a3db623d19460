"""Fires on a 3-node NATS cluster (R3) against one nats-server (R1), in the same run; and the time from a
nats-server's SIGKILL to fires being accepted again.

Run: .venv/bin/python bench/cluster.py [--seconds 10] [--concurrency 32] [--kills 8]

Both set-ups run the same Squall processes (`squall serve api` and `squall serve broker`, one each, as
squall/cluster.py starts them; no invoker) so the only difference is the backbone:
- single: one nats-server, streams and buckets R1;
- cluster: three clustered nats-servers on loopback, R3 (every acknowledged fire is on two nodes' disks).
accepted: `POST …/triggers/t` with an Idempotency-Key answered 202 per second from `--concurrency` callers
(bench/fire.py's lean client, in this process, on the same 2 cores: compare the two lines, not absolutes).
The trigger has one rule, on an action no invoker runs here: its runs wait in INVOKE, the broker still works.
recovery: `--kills` times, one node is SIGKILLed while 8 callers fire; the time from the kill to the first 202
of a fire sent after it (the API reconnects elsewhere, the streams the node led elect a new leader), then the
node is restarted and the cluster waits for its quorum. p50 / p99 / max are printed (p99 of few kills is ~max).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before bench/, whose api.py would shadow the api package

from bench.fire import burst, post_request  # noqa: E402
from broker.config import GUEST_KEY, Settings  # noqa: E402
from squall.cluster import LocalCluster  # noqa: E402

USER, _, SECRET = GUEST_KEY.partition(":")


async def prepare(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, auth=(USER, SECRET)) as client:
        # A fire of a trigger without an active rule is answered 204 and stores nothing: give it one. Its runs
        # wait in INVOKE (no invoker here), which is not what is measured.
        for path, body in (
            ("actions/noop", {"exec": {"kind": "python:default", "code": "def main(a):\n    return a\n"}}),
            ("triggers/t", {}),
            ("rules/r", {"trigger": "t", "action": "noop"}),
        ):
            r = await client.put(f"/api/v1/namespaces/_/{path}", json=body, params={"overwrite": "true"})
            r.raise_for_status()
        # The first fire makes the namespace's event queue (see tests/e2e/test_cluster.py).
        (await client.post("/api/v1/namespaces/_/triggers/t", json={})).raise_for_status()


async def accepted_rate(urls: list[str], seconds: float, concurrency: int) -> float:
    """bench/fire.py's lean client (prepared request bytes on keep-alive connections), per API URL."""
    request = post_request(
        "/api/v1/namespaces/_/triggers/t", "Basic " + base64.b64encode(GUEST_KEY.encode()).decode()
    )
    parts = [urlsplit(url) for url in urls]
    results = await asyncio.gather(
        *(
            burst(p.hostname or "", p.port or 80, request, seconds, concurrency // len(parts), None)
            for p in parts
        )
    )
    for result in results:
        assert not result.refused, result.refused
    return sum(result.rate for result in results)


@dataclass
class KillRound:
    """One kill: when it happened, and the first fire sent after it that was accepted."""

    killed_at: float | None = None
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    took_s: float = 0.0


async def fire_through(url: str, round_: KillRound, keys: itertools.count[int]) -> None:
    async with httpx.AsyncClient(base_url=url, auth=(USER, SECRET), timeout=10) as client:
        while not round_.stop.is_set():
            sent = time.monotonic()
            try:
                r = await client.post(
                    "/api/v1/namespaces/_/triggers/t", json={}, headers={"Idempotency-Key": f"k{next(keys)}"}
                )
            except httpx.TransportError:
                continue
            killed_at = round_.killed_at
            if (
                r.status_code == 202
                and killed_at is not None
                and sent > killed_at
                and not round_.recovered.is_set()
            ):
                round_.took_s = time.monotonic() - killed_at
                round_.recovered.set()
            if r.status_code != 202:
                await asyncio.sleep(0.01)


async def recovery_times(cluster: LocalCluster, kills: int) -> list[float]:
    times: list[float] = []
    keys = itertools.count()
    for index in range(kills):
        node = cluster.nats.nodes[index % len(cluster.nats.nodes)]
        round_ = KillRound()
        callers = [asyncio.create_task(fire_through(cluster.api_urls[0], round_, keys)) for _ in range(8)]
        await asyncio.sleep(1.0)
        round_.killed_at = time.monotonic()
        await node.kill()
        try:
            await asyncio.wait_for(round_.recovered.wait(), 60)
        except TimeoutError:
            api = cluster.of("api")[0]
            raise SystemExit(
                f"kill {index + 1} ({node.name}): no fire accepted in 60 s; API log:\n{api.output()[-3000:]}"
            ) from None
        print(
            f"          kill {index + 1} ({node.name}): fires accepted again after {round_.took_s:.2f} s",
            flush=True,
        )
        times.append(round_.took_s)
        round_.stop.set()
        await asyncio.gather(*callers)
        await node.restart()
        await cluster.nats.wait_quorum()
    return times


async def run(args: argparse.Namespace) -> None:
    rates: dict[str, float] = {}
    for label, nodes in (("single (1 nats-server, R1)", 1), ("cluster (3 nats-servers, R3)", 3)):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.from_env(data_dir=Path(tmp))
            async with LocalCluster(
                settings, nats_nodes=nodes, apis=1, brokers=1, invokers=0, feeds=0
            ) as cluster:
                await prepare(cluster.api_urls[0])
                rates[label] = await accepted_rate(cluster.api_urls, args.seconds, args.concurrency)
                print(
                    f"accepted  {label:30} {rates[label]:8.0f} fires/s  (c={args.concurrency}, {args.seconds:.0f} s)"
                )
                if nodes == 3 and args.kills:
                    times = sorted(await recovery_times(cluster, args.kills))
                    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
                    print(
                        f"recovery  SIGKILL of a nats-server → fires accepted again, {len(times)} kills: "
                        f"p50 {statistics.median(times):.2f} s, p99 {p99:.2f} s, max {times[-1]:.2f} s "
                        f"({', '.join(f'{t:.2f}' for t in times)})"
                    )
    single, clustered = rates.values()
    print(f"ratio     cluster / single: {clustered / single:.2f} (goal ≥ 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kills", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
