"""The cost of metrics and trace context: fires/s, warm invoke p50 and server CPU per message, on vs off, paired.

Run: .venv/bin/python bench/observability.py [--sessions 2] [--rounds 3] [--seconds 5] [--concurrency 32]
                                             [--invokes 1000]

Starts two `squall standalone`s side by side (temporary data dirs, embedded NATS and MongoDB, the guest key's
benchmark-sized limits): one with the defaults (metrics counted, trace context carried: `on`) and one with
`SQUALL_METRICS=false SQUALL_TRACE_CONTEXT=false` (`off`). Both are measured in the same minutes, sample by
sample, so that whatever else the machine does falls on both alike:

- warm invoke: `--invokes` pairs of blocking invokes of a no-op Python action, one at a time, alternating which
  server goes first; p50 and p99 of each, and each server's CPU per invoke (its whole process tree, from /proc).
- fires: `--rounds` pairs of bursts (on, off, then off, on, …) of `POST …/triggers/{name}` from `--concurrency`
  callers (bench/fire.py's lean client) for `--seconds`, on a trigger with one active rule on the same no-op
  action; after each burst every fire's trigger record and run are waited for (the count checked), so the rule
  engine, invoker and recorder paths are paid for too. Fires accepted per second (median of the rounds) and the
  server's CPU per fire from the burst's start to the last record stored.
- with metrics on, a scrape of `/metrics` at the end, its time and size.

Each of `--sessions` starts a new pair, the other one first (the server started first measures slower, whatever
its settings). It prints each figure's on/off - 1 per session and their geometric mean, which cancels that
bias (the goal: within 5 %), with the machine's load (other work skews every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fire import (
    BIN,
    Server,
    burst,
    cpu_by_name,
    machine_busy,
    post_request,
    process,
    trigger_with_rules,
    until_stored,
)
from processes import free_port

from bench.invoke import Api, percentile
from broker.config import GUEST_KEY

OFF = {"SQUALL_METRICS": "false", "SQUALL_TRACE_CONTEXT": "false"}


@contextlib.contextmanager
def standalone(settings: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="squall-bench-metrics-") as tmp:
        data_dir = Path(tmp) / "data"
        cmd = [str(BIN / "squall"), "standalone", "--api-port", str(port), "--data-dir", str(data_dir)]
        url = f"http://127.0.0.1:{port}"
        with process(cmd, f"{url}/api/v1", settings=settings) as pid:
            info = data_dir / "standalone.json"
            deadline = time.monotonic() + 30
            while not info.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"the standalone wrote no {info}")
                time.sleep(0.02)
            yield Server(url, GUEST_KEY, json.loads(info.read_text())["nats_url"], pid)


@dataclass
class Figures:
    """What was measured on one setting's server in a session (`pooled` joins the sessions' figures)."""

    invokes: list[float] = field(default_factory=list)  # seconds, each blocking invoke
    invoke_cpu_ms: list[float] = field(default_factory=list)  # one per session
    fires: list[float] = field(default_factory=list)  # accepted per second, per burst
    fire_cpu_ms: list[float] = field(default_factory=list)  # per burst


@dataclass
class Side:
    """One of the two servers of a session."""

    label: str
    server: Server
    api: Api
    action: str
    trigger: str
    figures: Figures
    records: int = 0  # activation records of `action` stored so far
    trigger_records: int = 0


def tree_cpu_s(server: Server) -> float:
    return sum(cpu_by_name(server.pid).values())


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        body: bytes = reply.read()
    return body


def prepare(label: str, server: Server, figures: Figures) -> Side:
    api = Api(server.url, server.key)
    api.wait_for_invoker()
    suffix = uuid.uuid4().hex[:6]
    side = Side(label, server, api, f"noop-{suffix}", f"t-{suffix}", figures)
    trigger_with_rules(api, side.trigger, side.action, 1)
    for _ in range(50):  # the cold start; the rule's runs then find the container warm
        api.invoke(side.action)
    side.records = 50
    return side


def paired_invokes(sides: list[Side], n: int) -> None:
    before = [tree_cpu_s(side.server) for side in sides]
    for i in range(n):
        for side in sides if i % 2 == 0 else reversed(sides):
            side.figures.invokes.append(side.api.invoke(side.action))
    for side, cpu_before in zip(sides, before, strict=True):
        side.figures.invoke_cpu_ms.append((tree_cpu_s(side.server) - cpu_before) / n * 1000)
        side.records += n


async def fire_burst(args: argparse.Namespace, side: Side) -> None:
    server = side.server
    cpu_before = tree_cpu_s(server)
    request = post_request(f"/api/v1/namespaces/_/triggers/{side.trigger}", server.auth)
    result = await burst(server.host, server.port, request, args.seconds, args.concurrency, server.pid)
    side.records += result.accepted
    side.trigger_records += result.accepted
    expected = {side.trigger: side.trigger_records, side.action: side.records}
    await until_stored(side.api, expected, deadline_s=600)
    side.figures.fires.append(result.rate)
    side.figures.fire_cpu_ms.append((tree_cpu_s(server) - cpu_before) / max(1, result.accepted) * 1000)


async def session(
    args: argparse.Namespace, order: list[tuple[str, dict[str, str], Figures]]
) -> tuple[float, int]:
    """Both servers, started in `order`, measured side by side; then the time (ms) and size of the `on` one's
    `/metrics` scrape."""
    with contextlib.ExitStack() as stack:
        sides = [
            prepare(label, stack.enter_context(standalone(settings)), figures)
            for label, settings, figures in order
        ]
        first = len(sides[0].figures.invokes)
        paired_invokes(sides, args.invokes)
        p50s = "   ".join(
            f"{side.label} p50 {percentile(sorted(side.figures.invokes[first:]), 0.5) * 1000:.2f} ms, "
            f"{side.figures.invoke_cpu_ms[-1]:.2f} ms CPU"
            for side in sides
        )
        print(f"  warm invokes: {p50s}   load {os.getloadavg()[0]:.2f}")
        for n in range(args.rounds):
            for side in sides if n % 2 == 0 else reversed(sides):
                await fire_burst(args, side)
                print(
                    f"  burst {n + 1} {side.label:>3}: {side.figures.fires[-1]:6.0f} fires/s   "
                    f"{side.figures.fire_cpu_ms[-1]:5.2f} ms CPU per fire   load {os.getloadavg()[0]:.2f}"
                )
        on = next(side for side in sides if side.label == "on")
        started = time.perf_counter()
        body = await asyncio.to_thread(scrape, on.server.url)
        return (time.perf_counter() - started) * 1000, len(body)


MEASURES: list[tuple[str, Callable[[Figures], float]]] = [
    ("warm invoke p50 (ms)", lambda f: percentile(sorted(f.invokes), 0.5) * 1000),
    ("warm invoke p99 (ms)", lambda f: percentile(sorted(f.invokes), 0.99) * 1000),
    ("CPU per invoke (ms)", lambda f: statistics.median(f.invoke_cpu_ms)),
    ("fires/s (median)", lambda f: statistics.median(f.fires)),
    ("CPU per fire (ms, median)", lambda f: statistics.median(f.fire_cpu_ms)),
]


def pooled(figures: list[Figures]) -> Figures:
    return Figures(
        invokes=[x for f in figures for x in f.invokes],
        invoke_cpu_ms=[x for f in figures for x in f.invoke_cpu_ms],
        fires=[x for f in figures for x in f.fires],
        fire_cpu_ms=[x for f in figures for x in f.fire_cpu_ms],
    )


async def run(args: argparse.Namespace) -> None:
    print(f"machine busy before: {machine_busy():.2f} cores of {os.cpu_count()}; load {os.getloadavg()}")
    sessions: list[tuple[Figures, Figures]] = []
    scrapes: list[tuple[float, int]] = []
    for n in range(args.sessions):
        on, off = Figures(), Figures()
        sessions.append((on, off))
        settings = [("on", {}, on), ("off", OFF, off)]
        # The server started first measures slower (by 2 % on warm invokes and up to 25 % on fires in an
        # off/off session: it owns the shared Podman service, among others); alternating which one starts
        # first and comparing within each session cancels that out.
        order = settings if n % 2 == 0 else settings[::-1]
        print(f"session {n + 1}: {order[0][0]} started first")
        scrapes.append(await session(args, order))
    print()
    print(f"{'':28}{'on':>10}{'off':>10}{'on/off - 1':>12}   (geometric mean of the sessions' ratios)")
    all_on, all_off = pooled([on for on, _ in sessions]), pooled([off for _, off in sessions])
    for label, measure in MEASURES:
        ratios = [measure(on) / measure(off) for on, off in sessions]
        ratio = statistics.geometric_mean(ratios)
        each = ", ".join(f"{r - 1:+.1%}" for r in ratios)
        print(f"{label:28}{measure(all_on):10.2f}{measure(all_off):10.2f}{ratio - 1:+12.1%}   ({each})")
    print(
        f"/metrics scrape: {statistics.median(ms for ms, _ in scrapes):.1f} ms, {scrapes[-1][1] / 1024:.1f} KiB"
    )
    print(f"machine busy after: {machine_busy():.2f} cores; load {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--invokes", type=int, default=1000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
