"""Webhook and NATS-subject feed fires: verified webhook fires/s against plain HTTP fires/s of the same trigger,
and NATS-feed fires/s against the raw JetStream publish of the same messages, in one run.

Run: .venv/bin/python bench/webhooks.py [--seconds 5] [--concurrency 48] [--messages 5000]

It starts `squall standalone` (as bench/fire.py does: embedded NATS and MongoDB, the invoker's pool), makes the
catalog's two feed actions when they are missing, a trigger `hook` with one rule on a no-op Python action, and
measures, with the same lean keep-alive client as bench/fire.py and the same callers:
- plain: `POST …/triggers/hook` with the guest key, answered 202 per second;
- webhook: `POST /api/v1/webhooks/guest/hook` signed GitHub-style (`X-Hub-Signature-256`) with a unique
  `X-GitHub-Delivery` each (so each is verified, checked against the fired deliveries, fired, and marked);
  and once more without a delivery id (no idempotency: verification and the fire only).
  The ratio webhook / plain is the figure: what verification, the registration read and the delivery marks cost.
Then a trigger `stream` with a natsFeed on `events.guest.bench.>`: `--messages` messages are published pipelined
(`JetStreamBus.publish_async`; that publish rate is the floor), and the feed's rate is messages / (first publish
→ the last fire's event stored on TRIGGERS), checked to be exactly one event per message. No action runs:
each trigger's one rule is active with a filter no event matches, so a fire is accepted, stored on
TRIGGERS, read by the rule engine and recorded, and no action runs (their backlog would slow later figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fire import Burst, Server, exchange, machine_busy, own_cpu_s, put, standalone  # noqa: E402
from bench.invoke import Api  # noqa: E402
from broker import subjects  # noqa: E402
from broker.bus import JetStreamBus  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.entities import ACTIONS, PACKAGES, Action, Exec, KeyValue, Package  # noqa: E402
from broker.entity_store import EntityStore  # noqa: E402
from broker.errors import Conflict  # noqa: E402

BODY = b'{"bench":"webhook","ref":"refs/heads/main"}'
SYSTEM = "whisk.system"
FEEDS = (("webhooks", "webhook", "webhook"), ("messaging", "natsFeed", "natsFeed"))


async def ensure_feed_actions(bus: JetStreamBus) -> None:
    """The catalog's feed actions, made here while the catalog does not install them (idempotent)."""
    store = EntityStore(bus)
    for package, name, provider in FEEDS:
        with contextlib.suppress(Conflict):
            await store.create(PACKAGES, Package(namespace=SYSTEM, name=package, publish=True))
        action = Action(
            namespace=f"{SYSTEM}/{package}",
            name=name,
            publish=True,
            exec=Exec(kind="nodejs:18", code="function main() { return {}; }"),
            annotations=[KeyValue(key="feed", value=True), KeyValue(key="squall-feed", value=provider)],
        )
        with contextlib.suppress(Conflict):
            await store.create(ACTIONS, action)


def lifecycle(api: Api, feed: str, trigger: str, key: str, **params: Any) -> dict[str, Any]:
    body = {"lifecycleEvent": "CREATE", "triggerName": f"/_/{trigger}", "authKey": key, **params}
    status, answer = api.call(
        "POST", f"/api/v1/namespaces/{SYSTEM}/actions/{feed}?blocking=true&result=true", body
    )
    if status != 200 or "error" in answer:
        raise SystemExit(f"feed CREATE for {trigger}: HTTP {status} {answer}")
    return dict(answer)


def trigger_with_idle_rule(api: Api, trigger: str) -> None:
    """A trigger whose one rule is active (so fires are accepted and recorded) with a filter no event matches:
    no rule-fired runs pile up behind the measured fires and skew the later runs."""
    api.put_action(f"{trigger}-noop")
    put(api, "triggers", trigger, {})
    rule = {"trigger": f"/_/{trigger}", "action": f"/_/{trigger}-noop", "filter": {"data": {"never": ["x"]}}}
    put(api, "rules", f"{trigger}-rule", rule)


def request_bytes(path: str, headers: dict[str, str], body: bytes = BODY) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def burst(server: Server, make: Callable[[int], bytes], seconds: float, concurrency: int) -> Burst:
    """`concurrency` callers, each sending `make(n)` (n counts all requests) until the deadline."""
    result = Burst()
    loop = asyncio.get_running_loop()
    connections = [await asyncio.open_connection(server.host, server.port) for _ in range(concurrency)]
    counter = iter(range(10**12))
    deadline = loop.time() + seconds

    async def caller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while loop.time() < deadline:
            started = time.perf_counter()
            status, _ = await exchange(reader, writer, make(next(counter)))
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1

    cpu_before, started = own_cpu_s(), loop.time()
    try:
        await asyncio.gather(*(caller(r, w) for r, w in connections))
    finally:
        result.seconds = loop.time() - started
        result.client_cpu_s = own_cpu_s() - cpu_before
        for _, writer in connections:
            writer.close()
    return result


def summary(label: str, result: Burst) -> str:
    lat = sorted(result.latencies)
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
    refused = {k: v for k, v in result.statuses.items() if k != 202}
    return (
        f"{label:<44} {result.rate:8.0f} /s   p50 {p50:5.1f} ms  p99 {p99:5.1f} ms"
        f"{'   refused ' + str(refused) if refused else ''}"
    )


async def webhook_runs(server: Server, api: Api, args: argparse.Namespace) -> None:
    trigger_with_idle_rule(api, "hook")
    answer = lifecycle(api, "webhooks/webhook", "hook", server.key, scheme="github")
    path = answer["url"].split("://", 1)[1].split("/", 1)[1]
    path = "/" + path
    secret = answer["secret"].encode()
    signature = "sha256=" + hmac.new(secret, BODY, hashlib.sha256).hexdigest()
    plain = request_bytes("/api/v1/namespaces/_/triggers/hook", {"Authorization": server.auth})
    undelivered = request_bytes(path, {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push"})
    run_id = time.time_ns()

    def webhook(n: int) -> bytes:
        headers = {
            "X-Hub-Signature-256": signature,
            "X-GitHub-Delivery": f"{run_id}-{n}",
            "X-GitHub-Event": "push",
        }
        return request_bytes(path, headers)

    await burst(server, lambda _: plain, args.warmup, args.concurrency)  # warm caches and connections
    results: dict[str, list[Burst]] = {"plain": [], "webhook": [], "webhook-no-id": []}
    makers: dict[str, Callable[[int], bytes]] = {
        "plain": lambda _: plain,
        "webhook": webhook,
        "webhook-no-id": lambda _: undelivered,
    }
    names = list(makers)
    for round_ in range(args.rounds):
        # The order turns each round: the recorder's backlog grows through a round and weighs on its last run.
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            results[name].append(await burst(server, makers[name], args.seconds, args.concurrency))
    for name, runs in results.items():
        for i, result in enumerate(runs):
            print(summary(f"{name} (round {i + 1})", result))
    rates = {name: sum(r.rate for r in runs) / len(runs) for name, runs in results.items()}
    print(f"{'mean plain HTTP fire (202/s)':<44} {rates['plain']:8.0f} /s")
    print(f"{'mean webhook, verified + delivery id (202/s)':<44} {rates['webhook']:8.0f} /s")
    print(f"{'mean webhook, verified, no delivery id':<44} {rates['webhook-no-id']:8.0f} /s")
    print(f"{'ratio webhook / plain':<44} {rates['webhook'] / rates['plain']:8.2f}")
    print(f"{'ratio webhook without id / plain':<44} {rates['webhook-no-id'] / rates['plain']:8.2f}")


async def nats_feed_run(server: Server, api: Api, bus: JetStreamBus, messages: int) -> None:
    trigger_with_idle_rule(api, "stream")
    prefix = subjects.events_prefix("guest")
    lifecycle(api, "messaging/natsFeed", "stream", server.key, subject=f"{prefix}bench.>")
    trigger_subject = subjects.trigger_subject("guest", "stream")
    before, _ = await bus.count(subjects.TRIGGERS_STREAM, trigger_subject)
    payloads = [json.dumps({"n": n}).encode() for n in range(messages)]
    started = time.perf_counter()
    acks = [await bus.publish_async(f"{prefix}bench.n", payload) for payload in payloads]
    await asyncio.gather(*acks)
    published = time.perf_counter() - started
    deadline = time.monotonic() + 300
    while True:
        fired, _ = await bus.count(subjects.TRIGGERS_STREAM, trigger_subject)
        if fired - before >= messages:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {fired - before} of {messages} fires within 300 s")
        await asyncio.sleep(0.01)
    all_fired = time.perf_counter() - started
    await asyncio.sleep(1.0)  # anything more than one event per message would show up by now
    final, _ = await bus.count(subjects.TRIGGERS_STREAM, trigger_subject)
    print(f"{'floor: raw JetStream publish, pipelined':<44} {messages / published:8.0f} /s")
    print(f"{'NATS feed: publish → every fire on TRIGGERS':<44} {messages / all_fired:8.0f} /s")
    print(f"{'ratio feed / publish':<44} {published / all_fired:8.2f}")
    print(f"{'events on TRIGGERS per message':<44} {(final - before) / messages:8.2f}")
    if final - before != messages:
        raise SystemExit(f"{final - before} fires for {messages} messages")


async def run(args: argparse.Namespace) -> None:
    busy = machine_busy()
    print(f"machine busy before the run: {busy:.2f} cores")
    with standalone() as server:
        async with JetStreamBus(Settings(nats_url=server.nats_url), name="bench-webhooks") as bus:
            await ensure_feed_actions(bus)
            api = Api(server.url, server.key)
            await webhook_runs(server, api, args)
            await nats_feed_run(server, api, bus, args.messages)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
