"""Alarms: 1,000 alarms on a one-second cron in one namespace, fire lag and the feeds role's CPU per fire.

Run: .venv/bin/python bench/feeds.py [--alarms 1000] [--seconds 10] [--warmup 4]

It starts an embedded nats-server and nx-27017 in a temporary dir, makes a namespace with high limits, one
no-op action, `--alarms` triggers each with one active rule (a trigger without one is not fired: OpenWhisk's
204), and registers an alarm `* * * * * *` on each (straight into the feeds bucket, as a CREATE would store
it), then runs `squall serve feeds` as a child process. It prints:

- fire lag: from each scheduled instant to the server's store timestamp of its trigger event on TRIGGERS (an
  ordered consumer reads them; the instant is recovered from the event's activation id, which is derived
  from the feed and the instant), p50/p99 over `--seconds` of ticks after `--warmup` seconds, and that every
  instant of every alarm was stored exactly once in that window;
- CPU of the feeds process per fire (utime + stime from /proc over the window / events stored);
- the floor, in the same run: the same number of events (same bytes) published to a stream of TRIGGERS'
  configuration, pipelined, at each second boundary, from this process; lag from the boundary to each
  message's store timestamp.
No rule engine runs: the events wait in TRIGGERS, which is what the lag is measured to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nats.js import api  # noqa: E402

from broker import codec, subjects  # noqa: E402
from broker.admin import create_namespace  # noqa: E402
from broker.bus import JetStreamBus  # noqa: E402
from broker.clock import now_ms  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.entities import ACTIONS, TRIGGERS, Action, Exec, FullyQualifiedName, Rule, Trigger  # noqa: E402
from broker.entity_store import EntityStore  # noqa: E402
from broker.feed_registry import FeedRegistration, FeedRegistry  # noqa: E402
from broker.namespaces import NamespaceLimits  # noqa: E402
from broker.rules import create_rule  # noqa: E402
from broker.topology import DUPLICATE_WINDOW_S  # noqa: E402
from broker.trigger_events import TriggerEvent, fire_id  # noqa: E402
from feeds.alarm_scheduler import idempotency_key  # noqa: E402
from feeds.alarms import AlarmProvider  # noqa: E402
from squall.embedded import EmbeddedMongo, EmbeddedNats  # noqa: E402

BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAMESPACE = "bench-alarms"
FLOOR_STREAM = "BENCH_ALARMS_FLOOR"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def setup(store: EntityStore, bus: JetStreamBus, alarms: int) -> dict[str, FeedRegistration]:
    # Two entities per alarm (a trigger and its rule): past the default entity quota.
    limits = NamespaceLimits(firesPerMinute=10_000_000, maxEntities=2 * alarms + 100)
    key = await create_namespace(store, NAMESPACE, limits=limits)
    subject = key.split(":")[0]
    await store.create(
        ACTIONS, Action(namespace=NAMESPACE, name="noop", exec=Exec(kind="nodejs:18", code="x"))
    )
    registry = FeedRegistry(bus)
    config = AlarmProvider("alarm").configure({"cron": "* * * * * *"}, None, now_ms())
    found: dict[str, FeedRegistration] = {}
    for i in range(alarms):
        name = f"t{i:05d}"
        await store.create(TRIGGERS, Trigger(namespace=NAMESPACE, name=name))
        await create_rule(
            store,
            Rule(
                namespace=NAMESPACE,
                name=f"r{i:05d}",
                trigger=FullyQualifiedName(path=NAMESPACE, name=name),
                action=FullyQualifiedName(path=NAMESPACE, name="noop"),
            ),
        )
        registration = FeedRegistration(
            namespace=NAMESPACE,
            trigger=name,
            feed="/whisk.system/alarms/alarm",
            provider="alarm",
            config=config,
            subject=subject,
            created=now_ms(),
            updated=now_ms(),
        )
        await registry.create(registration)
        found[name] = registration
    return found


async def measure_alarms(
    bus: JetStreamBus, registrations: dict[str, FeedRegistration], pid: int, warmup: int, seconds: int
) -> tuple[list[float], float, int, int]:
    """(lags in ms, CPU s per event, events in the window, instants missing or doubled)."""
    lags: list[float] = []
    seen: dict[tuple[str, int], int] = {}
    window: list[int] = []

    async def on_event(msg: object) -> None:
        stored = msg.metadata.timestamp.timestamp() * 1000  # type: ignore[attr-defined]
        event = codec.decode(msg.data, TriggerEvent)  # type: ignore[attr-defined]
        registration = registrations[event.trigger]
        second = int(stored) // 1000 * 1000
        for instant in (second, second - 1000, second - 2000):
            if (
                fire_id(NAMESPACE, event.trigger, idempotency_key(registration, instant))
                == event.activationId
            ):
                break
        else:
            return
        if window and window[0] <= instant < window[1]:
            lags.append(stored - instant)
            seen[(event.trigger, instant)] = seen.get((event.trigger, instant), 0) + 1

    sub = await bus.js.subscribe(
        subjects.trigger_filter(NAMESPACE),
        stream=subjects.TRIGGERS_STREAM,
        cb=on_event,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.NEW,
    )
    await asyncio.sleep(warmup)
    start = (now_ms() // 1000 + 1) * 1000
    window[:] = [start, start + seconds * 1000]
    await asyncio.sleep((start - now_ms()) / 1000)
    cpu0 = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    cpu1 = cpu_seconds(pid)
    await asyncio.sleep(2)  # the last second's events arrive
    await sub.unsubscribe()
    expected = {(name, t) for name in registrations for t in range(start, start + seconds * 1000, 1000)}
    missing = expected - seen.keys()
    if missing:
        by_instant: dict[int, int] = {}
        for _, instant in missing:
            by_instant[instant - start] = by_instant.get(instant - start, 0) + 1
        print(f"missing, by ms after the window's start: {dict(sorted(by_instant.items()))}")
    wrong = len(missing) + sum(1 for n in seen.values() if n != 1)
    return lags, (cpu1 - cpu0) / max(1, len(lags)), len(lags), wrong


async def measure_floor(bus: JetStreamBus, alarms: int, seconds: int) -> list[float]:
    """The same count of events of the same size published at each second boundary, pipelined."""
    await bus.js.add_stream(
        api.StreamConfig(
            name=FLOOR_STREAM,
            subjects=["benchfloor.>"],
            duplicate_window=DUPLICATE_WINDOW_S,
            storage=api.StorageType.FILE,
        )
    )
    lags: list[float] = []
    for _ in range(seconds):
        boundary = (now_ms() // 1000 + 1) * 1000
        await asyncio.sleep((boundary - now_ms()) / 1000)
        futures = []
        for i in range(alarms):
            event = TriggerEvent(
                activationId=fire_id(NAMESPACE, f"t{i:05d}", f"floor@{boundary}"),
                namespace=NAMESPACE,
                trigger=f"t{i:05d}",
                subject="bench",
                published=now_ms(),
            )
            futures.append(
                await bus.publish_async(f"benchfloor.{i}", codec.encode(event), msg_id=event.activationId)
            )
        acks = await asyncio.gather(*futures)
        for ack in acks:
            raw = await bus.js.get_msg(FLOOR_STREAM, ack.seq)
            assert raw.headers is not None or raw.data
            stored = raw.time.timestamp() * 1000 if raw.time else now_ms()  # type: ignore[attr-defined]
            lags.append(stored - boundary)
    await bus.js.delete_stream(FLOOR_STREAM)
    return lags


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squall-bench-feeds-") as tmp:
        data = Path(tmp)
        (data / "nats").mkdir()
        (data / "mongo").mkdir()
        async with EmbeddedNats(data / "nats") as nats_server, EmbeddedMongo(data / "mongo") as mongo:
            settings = Settings(nats_url=nats_server.url, mongodb_uri=mongo.uri, data_dir=data)
            async with JetStreamBus(settings) as bus:
                await bus.provision()
                store = EntityStore(bus)
                t0 = time.monotonic()
                registrations = await setup(store, bus, args.alarms)
                print(f"setup: {args.alarms} triggers, rules and alarms in {time.monotonic() - t0:.1f} s")
                env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
                env |= {"SQUALL_NATS_URL": settings.nats_url, "SQUALL_MONGODB_URI": settings.mongodb_uri}
                with (data / "feeds.log").open("wb") as log:
                    proc = await asyncio.create_subprocess_exec(
                        str(BIN / "squall"), "serve", "feeds", env=env, stdout=log, stderr=log
                    )
                    try:
                        lags, cpu, events, wrong = await measure_alarms(
                            bus, registrations, proc.pid, args.warmup, args.seconds
                        )
                    finally:
                        proc.terminate()
                        await asyncio.wait_for(proc.wait(), 20)
                floor = await measure_floor(bus, args.alarms, args.seconds)
    print(
        f"alarms: {events} events in {args.seconds} s ({events / args.seconds:,.0f} /s); "
        f"instants missing or doubled: {wrong}"
    )
    print(
        f"fire lag, instant -> stored in TRIGGERS: p50 {percentile(lags, 50):.0f} ms, "
        f"p99 {percentile(lags, 99):.0f} ms, max {max(lags):.0f} ms (mean {statistics.fmean(lags):.0f})"
    )
    print(f"feeds process CPU per fire: {cpu * 1000:.3f} ms")
    print(
        f"floor, {args.alarms} events published pipelined at each second: p50 {percentile(floor, 50):.0f} ms, "
        f"p99 {percentile(floor, 99):.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
