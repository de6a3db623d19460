"""Bursts: how fast a namespace's backlog drains when its concurrency is limited, and what another namespace
sees meanwhile.

Run: .venv/bin/python bench/burst.py [--seconds 3] [--concurrency 32] [--limit 20]

It starts `squall standalone` on a free port with a temporary data dir (as bench/fire.py does), gives `guest`
a trigger with one rule on a no-op Python action, and creates a second namespace `quiet` with the same. Then:

1. plain warm throughput (the floor): `guest` unlimited, fires for `--seconds` from `--concurrency` callers;
   runs completed per second, from the first fire to the last run's record.
2. burst: `guest` limited to `--limit` concurrent activations, the same fires. Every fire is accepted (202)
   and its run waits in the namespace's queue: the backlog (`GET …/queue`) and the drain rate, runs
   completed per second from the first fire to the last record; ratio to the floor.
3. the quiet namespace: one fire every 100 ms while the backlog drains, fire -> its run's `start`; reference:
   the same with nothing else going on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fire import (  # noqa: E402
    BIN,
    Record,
    Server,
    burst,
    exchange,
    line,
    machine_busy,
    post_request,
    standalone,
    trigger_with_rules,
)
from bench.invoke import Api, percentile  # noqa: E402
from broker.config import GUEST_NAMESPACE, Settings  # noqa: E402

QUIET = "quiet"
QUIET_KEY = "5a1b2c3d-0000-4000-8000-000000000001:" + "q" * 64
TRIGGER, ACTION = "burst-t", "burst-noop"


class Runs:
    """A core NATS subscription to the run records of one action: when each was seen, and its `start`."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}  # activation id -> perf_counter when its record arrived
        self.start_ms: dict[str, int] = {}
        self.by_cause: dict[str, str] = {}  # fire id -> run id

    async def on(self, msg: Any) -> None:
        import msgspec

        record = msgspec.json.decode(msg.data, type=Record)
        self.seen.setdefault(record.activationId, time.perf_counter())
        self.start_ms[record.activationId] = record.start
        if record.cause is not None:
            self.by_cause[record.cause] = record.activationId


def admin(server: Server, *args: str) -> None:
    subprocess.run(
        [str(BIN / "squall"), "admin", "--nats-url", server.nats_url, "namespace", *args],
        check=True,
        capture_output=True,
    )


async def fires(server: Server, auth: str, seconds: float, concurrency: int) -> int:
    request = post_request(f"/api/v1/namespaces/_/triggers/{TRIGGER}", auth)
    result = await burst(server.host, server.port, request, seconds, concurrency, server.pid)
    refused = {s: n for s, n in result.statuses.items() if s != 202}
    if refused:
        raise SystemExit(f"fires refused: {refused}")
    return result.statuses[202]


async def until_runs(runs: Runs, expected: int, deadline_s: float = 300) -> float:
    started = time.perf_counter()
    while len(runs.seen) < expected:
        if time.perf_counter() - started > deadline_s:
            raise SystemExit(f"{len(runs.seen)} of {expected} runs recorded after {deadline_s} s")
        await asyncio.sleep(0.05)
    return max(runs.seen.values())


async def quiet_fires(server: Server, runs: Runs, stop: asyncio.Event, auth: str) -> list[float]:
    """One fire every 100 ms until `stop`; ms from the request to each run's `start`."""
    request = post_request(f"/api/v1/namespaces/_/triggers/{TRIGGER}", auth)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    sent: dict[str, float] = {}
    try:
        while not stop.is_set():
            at_ms = time.time_ns() / 1e6
            status, body = await exchange(reader, writer, request)
            if status != 202:
                raise SystemExit(f"quiet fire: HTTP {status} {body[:200]!r}")
            sent[json.loads(body)["activationId"]] = at_ms
            await asyncio.sleep(max(0.0, 0.1 - (time.time_ns() / 1e6 - at_ms) / 1000))
    finally:
        writer.close()
    deadline = time.monotonic() + 30
    while not all(fire in runs.by_cause for fire in sent):
        if time.monotonic() > deadline:
            raise SystemExit("quiet runs missing")
        await asyncio.sleep(0.05)
    return [runs.start_ms[runs.by_cause[fire]] - at for fire, at in sent.items()]


async def peak_backlog(api: Api, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        status, reply = await asyncio.to_thread(api.call, "GET", "/api/v1/namespaces/_/queue")
        if status == 200:
            peak = max(peak, reply["queued"])
        await asyncio.sleep(0.2)
    return peak


async def measure(args: argparse.Namespace, server: Server) -> None:
    from broker import subjects
    from broker.bus import JetStreamBus

    guest, quiet = Api(server.url, server.key), Api(server.url, QUIET_KEY)
    await asyncio.to_thread(guest.wait_for_invoker)
    admin(server, "create", QUIET, "--key", QUIET_KEY, "--invocations-per-minute", "1000000",
          "--fires-per-minute", "1000000", "--concurrent-invocations", "10000")  # fmt: skip
    await asyncio.to_thread(trigger_with_rules, guest, TRIGGER, ACTION, 1)
    await asyncio.to_thread(trigger_with_rules, quiet, TRIGGER, ACTION, 1)
    quiet_auth = Api(server.url, QUIET_KEY).auth

    async with JetStreamBus(Settings(nats_url=server.nats_url), name="bench-burst") as bus:
        guest_runs, quiet_runs = Runs(), Runs()
        await bus.subscribe(subjects.activation_subject(GUEST_NAMESPACE, ACTION), guest_runs.on)
        await bus.subscribe(subjects.activation_subject(QUIET, ACTION), quiet_runs.on)

        idle_stop = asyncio.Event()
        idle_task = asyncio.create_task(quiet_fires(server, quiet_runs, idle_stop, quiet_auth))
        await asyncio.sleep(3)
        idle_stop.set()
        idle = await idle_task

        # 1. The floor: guest unlimited.
        first = time.perf_counter()
        plain = await fires(server, server.auth, args.seconds, args.concurrency)
        plain_rate = plain / (await until_runs(guest_runs, plain) - first)

        # 2. The burst: guest limited.
        admin(server, "limits", GUEST_NAMESPACE, "--concurrent-invocations", str(args.limit))
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(guest.call, "GET", "/api/v1/namespaces/_/queue"))[1][
            "concurrentInvocations"
        ] != args.limit:
            if time.monotonic() > deadline:
                raise SystemExit("the guest queue never took its new limit")
            await asyncio.sleep(0.2)
        guest_runs.seen.clear()
        stop = asyncio.Event()
        peak = asyncio.create_task(peak_backlog(guest, stop))
        quiet_task = asyncio.create_task(quiet_fires(server, quiet_runs, stop, quiet_auth))
        first = time.perf_counter()
        burst_fires = await fires(server, server.auth, args.seconds, args.concurrency)
        accepted_in = time.perf_counter() - first
        done = await until_runs(guest_runs, burst_fires)
        stop.set()
        drain_rate = burst_fires / (done - first)
        during, backlog = await quiet_task, await peak

    print(
        f"\nbursts: 2 cores, {args.concurrency} callers for {args.seconds:g} s; one rule on a no-op Python action"
    )
    line(
        "1. plain warm throughput (guest unlimited): runs completed", f"{plain_rate:.0f} /s", f"{plain} fires"
    )
    line(f"2. burst (guest limited to {args.limit} at once): fires accepted",
         f"{burst_fires / accepted_in:.0f} /s", f"{burst_fires} fires, none refused")  # fmt: skip
    line("   backlog in the namespace's queue, peak (GET …/queue)", f"{backlog}", "runs waiting")
    line("   drain: runs completed, first fire -> last record", f"{drain_rate:.0f} /s",
         f"ratio to plain throughput {drain_rate / plain_rate:.2f}")  # fmt: skip
    for label, samples in (("during the drain", during), ("reference: nothing else running", idle)):
        line(f"3. quiet namespace fire -> run start, {label}",
             f"p50 {percentile(samples, 0.5):6.1f} ms", f"p99 {percentile(samples, 0.99):.1f} ms, n={len(samples)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each fire run")
    parser.add_argument("--concurrency", type=int, default=32, help="callers of the fire runs")
    parser.add_argument("--limit", type=int, default=20, help="guest's concurrentInvocations in the burst")
    args = parser.parse_args()
    print(f"cores busy before the run: {machine_busy():.2f}")
    with standalone() as server:
        asyncio.run(measure(args, server))


if __name__ == "__main__":
    main()
