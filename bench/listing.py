"""Listing a namespace of large actions: time and memory of `EntityStore.list` against reading the KV keys alone.

    .venv/bin/python bench/listing.py [--actions 100] [--size-mb 1]

Starts its own nats-server, stores N actions of S MB of code (each in the object store: too large for a KV
value), then lists them. Floor: one headers-only pass over the same KV keys (what a listing cannot avoid).
Memory is the Python heap's peak during a listing (tracemalloc), code bytes included if the listing reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from broker import subjects
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entities import ACTIONS, Action, Exec
from broker.entity_store import EntityStore
from squall.embedded import EmbeddedNats


async def main(actions: int, size_mb: float, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            settings = Settings(nats_url=server.url, data_dir=Path(tmp))
            async with JetStreamBus(settings) as bus:
                await bus.provision()
                store = EntityStore(bus)
                code = "# " + "x" * int(size_mb * 1024 * 1024) + "\ndef main(a): return a\n"
                for i in range(actions):
                    action = Action(namespace="bench", name=f"a{i}", exec=Exec(kind="python:3.11", code=code))
                    await store.create(ACTIONS, action)
                listed, floor, peak = [], [], 0
                for _ in range(runs):
                    tracemalloc.start()
                    started = time.perf_counter()
                    found = await store.list(ACTIONS, "bench")
                    listed.append(time.perf_counter() - started)
                    peak = max(peak, tracemalloc.get_traced_memory()[1])
                    tracemalloc.stop()
                    assert len(found) == actions
                    started = time.perf_counter()
                    prefix = f"$KV.{subjects.ENTITIES_BUCKET}."
                    heads = await bus.last_per_subject(
                        f"KV_{subjects.ENTITIES_BUCKET}", prefix + "bench.>", headers_only=True
                    )
                    floor.append(time.perf_counter() - started)
                    assert len(heads) == actions
    median, floor_median = statistics.median(listed), statistics.median(floor)
    print(f"{actions} actions of {size_mb} MB, median of {runs} listings")
    print(f"  list:  {median * 1000:8.1f} ms, heap peak {peak / 2**20:8.1f} MiB")
    print(f"  floor: {floor_median * 1000:8.1f} ms (headers-only pass over the keys)")
    print(f"  ratio: {median / floor_median:8.1f} x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actions", type=int, default=100)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.actions, args.size_mb, args.runs))
