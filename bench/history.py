"""Activation history at scale: the API's activation reads at a million records, against the same requests on an
empty store in the same run; and the recorder's write rate at both sizes.

Run: .venv/bin/python bench/history.py [--records 1000000] [--reps 300] [--keep DIR]
     .venv/bin/python bench/history.py --mongodb-uri mongodb://HOST/   (a real MongoDB instead of nx-27017)

It starts a nats-server (for the namespace and its key) and, unless --mongodb-uri is given, an nx-27017 in a
temporary directory (with --keep, in DIR, so that a second run skips the seeding). The store is seeded directly,
outside the API and the recorder: `insert_many` of a million records in the store's document form (namespace
`guest`, 20 actions of which 4 in a package, starts spread over the last 6 days, inside the 7-day retention),
then `ActivationStore.provision()` builds the indexes and counts the records once, as it does for a store written
before counts were kept. Two stores live side by side in the same server: `history_full` and `history_empty`.

The requests go through the whole API app in this process (httpx over ASGI, without an HTTP server), with the
guest key and the key cache as the API role has them, one at a time. For each: p50 and p99 at 1M records, the
same request on the empty store (its floor: everything but the history; a get there is a 404), and their ratio.
The driver's own floor is a raw `find_one` by `_id` on the full store.

The recorder's write rate is `ActivationStore.insert_many` in the recorder's batches (256 records, counted),
at 1M records and on the empty store, against a raw `insert_many` of the same kind of documents in the same
batches into the same collection (same indexes, same size) without counts: --rounds rounds, the two alternating,
medians reported. The records written are deleted again after each round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api.app import create_app  # noqa: E402
from broker.activation_store import ActivationStore, to_document  # noqa: E402
from broker.activations import SUCCESS, Activation, make_response, new_activation_id  # noqa: E402
from broker.admin import ensure_namespace  # noqa: E402
from broker.bus import JetStreamBus  # noqa: E402
from broker.config import GUEST_KEY, Settings  # noqa: E402
from broker.entities import KeyValue  # noqa: E402
from broker.entity_store import EntityStore  # noqa: E402
from broker.key_cache import KeyCache  # noqa: E402
from broker.recorder import BATCH  # noqa: E402
from broker.subjects import (  # noqa: E402
    ACTIVATION_COUNT_DELTAS_COLLECTION,
    ACTIVATION_COUNTS_COLLECTION,
    ACTIVATION_META_COLLECTION,
    ACTIVATIONS_COLLECTION,
)
from squall.embedded import EmbeddedMongo, EmbeddedNats  # noqa: E402

NAMESPACE = "guest"
ACTIONS = [f"a{i}" for i in range(16)] + [f"pkg/a{i}" for i in range(16, 20)]
SPAN_MS = 6 * 86_400_000
SEED_BATCH = 5_000
BASE = f"/api/v1/namespaces/{NAMESPACE}/activations"
GOALS = {"list": 20.0, "get": 5.0, "count": 50.0}  # ms, p50 (issue 18)


def activation(start: int, path: str, i: int) -> Activation:
    name = path.rpartition("/")[2]
    return Activation(
        namespace=NAMESPACE,
        name=name,
        subject=NAMESPACE,
        activationId=new_activation_id(),
        start=start,
        end=start + 7,
        duration=7,
        response=make_response(SUCCESS, {"greeting": f"hello {i}", "n": i}),
        logs=[
            "2026-12-01T00:00:00.000000Z  stdout: handling a request",
            "2026-12-01T00:00:00.000000Z  stdout: done",
        ],
        version="0.0.1",
        publish=False,
        annotations=[
            KeyValue(key="path", value=f"{NAMESPACE}/{path}"),
            KeyValue(key="kind", value="python:3.11"),
            KeyValue(key="limits", value={"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}),
            KeyValue(key="waitTime", value=3),
        ],
    )


def seed_documents(count: int, now: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        to_document(activation(now - rng.randrange(SPAN_MS), rng.choice(ACTIONS), i)) for i in range(count)
    ]


async def reset(store: ActivationStore) -> None:
    """An empty store: no records, no counts."""
    database = store.collection.database
    for name in (
        ACTIVATIONS_COLLECTION,
        ACTIVATION_COUNTS_COLLECTION,
        ACTIVATION_COUNT_DELTAS_COLLECTION,
        ACTIVATION_META_COLLECTION,
    ):
        await database[name].drop()


async def seed(store: ActivationStore, records: int) -> None:
    """A million records straight into the collection, two `insert_many` in flight (the client builds the
    next batch while the server stores one), then the store's own provisioning: indexes and counts."""
    meta = store.collection.database["bench_meta"]
    done = await meta.find_one({"_id": "seeded"})
    if done is not None and done.get("records") == records:
        print(f"seeded store found: {records:,} records")
        return
    await reset(store)
    rng = random.Random(18)
    now = int(time.time() * 1000)
    started = time.perf_counter()
    pending: set[asyncio.Task[Any]] = set()
    for offset in range(0, records, SEED_BATCH):
        docs = seed_documents(min(SEED_BATCH, records - offset), now, rng)
        if len(pending) >= 2:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()
        pending.add(asyncio.create_task(store.collection.insert_many(docs, ordered=False)))
        if offset and offset % 100_000 == 0:
            print(f"  seeded {offset:,} ({offset / (time.perf_counter() - started):,.0f}/s)", flush=True)
    await asyncio.gather(*pending)
    inserted = time.perf_counter() - started
    await store.provision()
    provisioned = time.perf_counter() - started - inserted
    print(
        f"seeded {records:,} records in {inserted:.0f} s ({records / inserted:,.0f}/s); "
        f"indexes and counts in {provisioned:.1f} s"
    )
    # `_id` in the replacement too: nx-27017's upsert takes it from there, not from the filter.
    await meta.replace_one({"_id": "seeded"}, {"_id": "seeded", "records": records}, upsert=True)


# --- measuring ------------------------------------------------------------------------------------------


class Samples:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def p(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) * 1000


async def timed(reps: int, call: Callable[[int], Awaitable[Any]]) -> Samples:
    samples = Samples()
    for i in range(
        min(10, reps)
    ):  # warm the caches (SQLite pages, the key cache) as a running server has them
        await call(i)
    for i in range(reps):
        started = time.perf_counter()
        await call(i)
        samples.seconds.append(time.perf_counter() - started)
    return samples


def request(
    client: httpx.AsyncClient, path: str | Callable[[int], str], expect: int = 200
) -> Callable[[int], Awaitable[Any]]:
    async def call(i: int) -> Any:
        response = await client.get(path(i) if callable(path) else path)
        if response.status_code != expect:
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:200]}")
        return response

    return call


@contextlib.asynccontextmanager
async def backbone(args: argparse.Namespace, workdir: Path) -> AsyncIterator[tuple[Settings, str]]:
    async with contextlib.AsyncExitStack() as stack:
        nats = await stack.enter_async_context(EmbeddedNats(workdir / "nats"))
        uri = args.mongodb_uri
        if not uri:
            uri = (await stack.enter_async_context(EmbeddedMongo(workdir / "mongo"))).uri
        yield Settings(nats_url=nats.url, mongodb_uri=uri, data_dir=workdir), uri


def ids_of(docs: list[dict[str, Any]]) -> list[str]:
    return [d["activationId"] for d in docs]


async def write_rate(store: ActivationStore, records: int, now: int) -> float:
    """Records/s of the recorder's store writes: `insert_many` of BATCH records at a time."""
    rng = random.Random(7)
    batches = [
        [activation(now + i, rng.choice(ACTIONS), i) for i in range(j, min(records, j + BATCH))]
        for j in range(0, records, BATCH)
    ]
    started = time.perf_counter()
    for batch in batches:
        await store.insert_many(batch)
    rate = records / (time.perf_counter() - started)
    # Leave the store as it was: the written records are deleted again (counted out like a sweep's).
    written = await store.collection.find(
        {"_id": {"$in": [r.activationId for b in batches for r in b]}},
        {"_id": 1, "entityPath": 1, "batch": 1},
    ).to_list()
    for i in range(0, len(written), 500):
        await store.delete(NAMESPACE, written[i : i + 500])
    return rate


async def raw_write_rate(store: ActivationStore, records: int, now: int) -> float:
    """The floor: the same documents, batches and collection, without counts."""
    rng = random.Random(7)
    docs = [to_document(activation(now + i, rng.choice(ACTIONS), i)) for i in range(records)]
    started = time.perf_counter()
    for j in range(0, records, BATCH):
        await store.collection.insert_many(docs[j : j + BATCH], ordered=False)
    rate = records / (time.perf_counter() - started)
    ids = [d["_id"] for d in docs]
    for j in range(0, records, 500):  # uncounted, so deleted uncounted
        await store.collection.delete_many({"_id": {"$in": ids[j : j + 500]}})
    return rate


def row(label: str, full: Samples, empty: Samples | None, goal: float | None) -> str:
    floor = f"{empty.p50:7.2f} {empty.p(0.99):7.2f}" if empty else f"{'':7} {'':7}"
    ratio = f"{full.p50 / empty.p50:6.1f}" if empty else f"{'':6}"
    verdict = "" if goal is None else ("ok" if full.p50 <= goal else "MISSED") + f" (≤ {goal:g})"
    return f"{label:34} {full.p50:7.2f} {full.p(0.99):7.2f}   {floor}  {ratio}  {verdict}"


def machine() -> str:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    return f"commit {commit}, {os.cpu_count()} cores, {kib / 1024**2:.0f} GiB"


async def main(args: argparse.Namespace, workdir: Path) -> None:
    async with backbone(args, workdir) as (settings, uri), contextlib.AsyncExitStack() as stack:
        print(f"store: {'nx-27017 (embedded)' if not args.mongodb_uri else 'MongoDB at ' + uri}")
        full = await stack.enter_async_context(ActivationStore(uri, "history_full", timeout_s=30))
        empty = await stack.enter_async_context(ActivationStore(uri, "history_empty"))
        await seed(full, args.records)
        await reset(empty)
        await empty.provision()
        await full.provision()  # as the API role does at start; on a seeded store, a no-op

        bus = await stack.enter_async_context(JetStreamBus(settings))
        await bus.provision()
        entities = EntityStore(bus)
        await ensure_namespace(entities, NAMESPACE, GUEST_KEY)
        keys = await stack.enter_async_context(KeyCache(bus, entities))
        auth = httpx.BasicAuth(*GUEST_KEY.split(":", 1))
        clients = {}
        for label, store in (("full", full), ("empty", empty)):
            app = create_app(settings, entities, store, keys)
            transport = httpx.ASGITransport(app=app)
            clients[label] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://squall", auth=auth)
            )

        total = await full.count(NAMESPACE)
        print(
            f"history_full: {total:,} records in {NAMESPACE}; history_empty: {await empty.count(NAMESPACE)}"
        )
        rng = random.Random(1)
        sample = ids_of(
            await full.collection.find(
                {}, {"activationId": 1}, skip=rng.randrange(max(1, total - 2000)), limit=1000
            ).to_list()
        )
        now = int(time.time() * 1000)
        window = f"since={now - 3_600_000}&upto={now - 1_800_000}"
        reads: list[tuple[str, str | Callable[[int], str], str]] = [
            ("list newest 30", "?limit=30", "list"),
            ("list newest 30, docs=true", "?limit=30&docs=true", "list"),
            ("list by name (a3)", "?limit=30&name=a3", "list"),
            ("list by package name (pkg/a17)", "?limit=30&name=pkg/a17", "list"),
            ("list since/upto (a half hour)", f"?limit=30&{window}", "list"),
            ("list page skip=1000", "?limit=30&skip=1000", "list"),
            ("get by id", lambda i: f"/{sample[i % len(sample)]}", "get"),
            ("result", lambda i: f"/{sample[i % len(sample)]}/result", "get"),
            ("logs", lambda i: f"/{sample[i % len(sample)]}/logs", "get"),
            ("count", "?count=true", "count"),
            ("count by name (pkg/a17)", "?count=true&name=pkg/a17", "count"),
            ("count since=0 (holds every record)", "?count=true&since=0", "count"),
            ("count since/upto (a half hour)", f"?count=true&{window}", None),
        ]
        print()
        print(f"{'':34} {f'{total:,} records':>15}   {'empty store':>15}  {'ratio':>6}  goal p50 (ms)")
        print(f"{'request (ms)':34} {'p50':>7} {'p99':>7}   {'p50':>7} {'p99':>7}  {'p50':>6}")
        for label, path, kind in reads:
            at_scale = await timed(args.reps, request(clients["full"], _under(path)))
            expect = 404 if kind == "get" else 200
            floor = await timed(args.reps, request(clients["empty"], _under(path), expect))
            print(row(label, at_scale, floor, GOALS.get(kind or "")), flush=True)
        raw = await timed(args.reps, lambda i: full.collection.find_one({"_id": sample[i % len(sample)]}))
        print(row("driver floor: find_one by _id", raw, None, None))

        print()
        writes = args.writes
        rates: dict[str, list[float]] = {"full": [], "full raw": [], "empty": [], "empty raw": []}
        for r in range(args.rounds):
            start = now + (r + 1) * 100_000_000  # each round's records apart from the others'
            for label, store in (("full", full), ("empty", empty)):
                rates[label].append(await write_rate(store, writes, start))
                rates[f"{label} raw"].append(await raw_write_rate(store, writes, start + 50_000_000))
        med = {label: statistics.median(values) for label, values in rates.items()}
        print(
            f"recorder writes ({writes:,} records in batches of {BATCH}; median of {args.rounds}), records/s:"
        )
        print(f"{'':24} {'counted':>9} {'raw (floor)':>12} {'ratio':>6}")
        for label, size in (("full", f"{total:,} records"), ("empty", "empty store")):
            counted, raw = med[label], med[f"{label} raw"]
            print(f"  {size:22} {counted:9,.0f} {raw:12,.0f} {counted / raw:6.2f}")
        print(f"  1M / empty, counted: {med['full'] / med['empty']:.2f}")
        assert await full.count(NAMESPACE) == total, "the write benchmark left the counts changed"


def _under(path: str | Callable[[int], str]) -> str | Callable[[int], str]:
    if callable(path):
        return lambda i: BASE + path(i)
    return BASE + path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--writes", type=int, default=10_240, help="records written per write measurement")
    parser.add_argument("--rounds", type=int, default=3, help="write measurements of each kind")
    parser.add_argument("--keep", help="keep the servers' data here and reuse a seeded store")
    parser.add_argument("--mongodb-uri", help="a MongoDB to use instead of an embedded nx-27017")
    arguments = parser.parse_args()
    workdir = Path(arguments.keep) if arguments.keep else Path(tempfile.mkdtemp(prefix="squall-history-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(machine())
    try:
        asyncio.run(main(arguments, workdir))
    finally:
        if not arguments.keep:
            shutil.rmtree(workdir, ignore_errors=True)
