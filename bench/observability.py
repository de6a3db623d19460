"""The cost of metrics and trace context: fires/s and warm invoke p50 with both on, then both off, same run.

Run: .venv/bin/python bench/observability.py [--rounds 2] [--seconds 5] [--concurrency 32] [--invokes 300]

Starts `squall standalone` (temporary data dir, embedded NATS and MongoDB, the guest key's benchmark-sized
limits) alternately with the defaults (metrics counted, trace context carried: `on`) and with
`SQUALL_METRICS=false SQUALL_TRACE_CONTEXT=false` (`off`), `--rounds` times each, interleaved (on, off, on,
off…) so that drift of a shared machine falls on both alike. Per server:

- fires/s: `POST …/triggers/{name}` answered 202 per second from `--concurrency` callers (bench/fire.py's lean
  client), for a trigger with one active rule on a no-op Python action; every fire's trigger record and run are
  then waited for (the count checked), so the rule engine, invoker and recorder paths are paid for as well.
- warm p50: `--invokes` blocking invokes of a no-op Python action, one at a time, after 50 to warm it.
- with metrics on, a scrape of `/metrics` at the end, its time and size.

It prints the median of each figure over the rounds, and on/off - 1 (the goal: within 5 %), with the machine's
load (other work skews every figure; on a 2-core machine shared with others, differences of a few % are noise).
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fire import BIN, Server, burst, machine_busy, post_request, process, trigger_with_rules, until_stored
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
    fires: list[float] = field(default_factory=list)
    warm_p50: list[float] = field(default_factory=list)
    scrape_ms: list[float] = field(default_factory=list)
    scrape_bytes: list[int] = field(default_factory=list)


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        body: bytes = reply.read()
    return body


async def one_round(args: argparse.Namespace, settings: dict[str, str], into: Figures) -> None:
    with standalone(settings) as server:
        api = Api(server.url, server.key)
        api.wait_for_invoker()
        suffix = uuid.uuid4().hex[:6]
        action, trigger = f"noop-{suffix}", f"t-{suffix}"
        trigger_with_rules(api, trigger, action, 1)
        for _ in range(50):  # the cold start; the rule's runs then find the container warm
            api.invoke(action)
        request = post_request(f"/api/v1/namespaces/_/triggers/{trigger}", server.auth)
        result = await burst(server.host, server.port, request, args.seconds, args.concurrency, server.pid)
        await until_stored(api, {trigger: result.accepted, action: result.accepted + 50}, deadline_s=600)
        into.fires.append(result.rate)
        samples = sorted(api.invoke(action) for _ in range(args.invokes))
        into.warm_p50.append(percentile(samples, 0.5))
        if settings is not OFF:
            started = time.perf_counter()
            body = await asyncio.to_thread(scrape, server.url)
            into.scrape_ms.append((time.perf_counter() - started) * 1000)
            into.scrape_bytes.append(len(body))


async def run(args: argparse.Namespace) -> None:
    print(f"machine busy before: {machine_busy():.2f} cores of {os.cpu_count()}; load {os.getloadavg()}")
    on, off = Figures(), Figures()
    for n in range(args.rounds):
        for label, settings, figures in (("on", {}, on), ("off", OFF, off)):
            await one_round(args, settings, figures)
            print(
                f"round {n + 1} {label:>3}: {figures.fires[-1]:8.0f} fires/s   "
                f"warm p50 {figures.warm_p50[-1] * 1000:6.2f} ms   load {os.getloadavg()[0]:.2f}"
            )
    fires_on, fires_off = statistics.median(on.fires), statistics.median(off.fires)
    p50_on, p50_off = statistics.median(on.warm_p50), statistics.median(off.warm_p50)
    print()
    print(f"{'':24}{'on':>12}{'off':>12}{'on/off - 1':>14}")
    print(f"{'fires/s (median)':24}{fires_on:12.0f}{fires_off:12.0f}{fires_on / fires_off - 1:+14.1%}")
    print(
        f"{'warm invoke p50 (ms)':24}{p50_on * 1000:12.2f}{p50_off * 1000:12.2f}{p50_on / p50_off - 1:+14.1%}"
    )
    if on.scrape_ms:
        print(
            f"/metrics scrape: {statistics.median(on.scrape_ms):.1f} ms, "
            f"{statistics.median(on.scrape_bytes) / 1024:.1f} KiB"
        )
    print(f"machine busy after: {machine_busy():.2f} cores; load {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--invokes", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
