"""Bursts are absorbed, not refused: event-driven runs over a namespace's limits wait in its queue on INVOKE.

- 5,000 fires with idempotency keys into a namespace whose concurrentInvocations is 20, while the broker role
  (`squall serve broker`, a real process) is SIGKILLed once: every fire has its record and exactly one run,
  none refused. Meanwhile a second namespace's events start within 250 ms (p99) while the first's backlog drains.
- JetStream holds a namespace to its concurrentInvocations across invokers.
- A run that waits past the maximum wait is dead-lettered as "throttled", and a redrive runs it.

The API (over ASGI) and the invokers run in this process, with a stand-in pool that records when each run
starts, how often each activation id runs and how many of a namespace's runs are running at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import msgspec
import pytest

from api.app import create_app
from api.gateway import InvokeGateway
from broker.activation_store import ActivationStore
from broker.activations import Activation
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.dead_letters import DeadLetters
from broker.entity_store import EntityStore
from broker.namespaces import NamespaceLimits
from broker.queues import InvokeQueues
from broker.recorder import ActivationRecorder
from broker.rule_engine import RuleEngine
from broker.throttles import Throttles
from broker.topology import invoke_queue
from broker.trigger_events import fire_id, rule_activation_id
from runtimes.contract import RunOutcome, RunRequest
from runtimes.invoker import InvokerAgent
from squall.embedded import EmbeddedNats
from tests.conditions import eventually
from tests.integration.broker_process import BrokerProcess, consumers, isolated_settings
from tests.integration.conftest import basic

pytestmark = pytest.mark.slow

CODE = {"exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"}}
FAST = NamespaceLimits(invocationsPerMinute=10**6, firesPerMinute=10**6, concurrentInvocations=10**4)


class TimingPool:
    """Stands in for the container pool: a run takes `run_s` (or the `sleep` parameter), and the pool records
    when each run starts, how often each id runs, and the most runs of one namespace at once."""

    def __init__(self, run_s: float = 0.0) -> None:
        self.run_s = run_s
        self.started: dict[str, float] = {}
        self.runs: collections.Counter[str] = collections.Counter()
        self.runs_of: collections.Counter[str] = collections.Counter()  # per namespace
        self.running: collections.Counter[str] = collections.Counter()
        self.most: collections.Counter[str] = collections.Counter()

    async def run(self, request: RunRequest) -> RunOutcome:
        aid, namespace = request.run.activation_id, request.run.namespace
        self.started.setdefault(aid, time.time())
        self.runs[aid] += 1
        self.runs_of[namespace] += 1
        self.running[namespace] += 1
        self.most[namespace] = max(self.most[namespace], self.running[namespace])
        try:
            value = request.run.value
            await asyncio.sleep(value.get("sleep", self.run_s) if isinstance(value, dict) else self.run_s)
        finally:
            self.running[namespace] -= 1
        now = int(time.time() * 1000)
        return RunOutcome(start=now, end=now, cold=False, status=200, body=b'{"ok":true}')


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(tmp_path / "nats") as server:
        yield server


async def client_for(
    stack: AsyncExitStack, settings: Settings, bus: JetStreamBus, key: str
) -> httpx.AsyncClient:
    """An API client of one namespace, over ASGI to an app with the real gateway and throttles."""
    store = EntityStore(bus)
    activations = await stack.enter_async_context(ActivationStore.from_settings(settings))
    throttles = await stack.enter_async_context(Throttles(bus, store, settings))
    gateway = await stack.enter_async_context(
        InvokeGateway(bus, queues=InvokeQueues(bus, settings, throttles.concurrency_of))
    )
    app = create_app(settings, store, activations, gateway=gateway, throttles=throttles)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key), timeout=30)
    )


async def trigger_with_rule(client: httpx.AsyncClient) -> None:
    assert (await client.put("/api/v1/namespaces/_/actions/a", json=CODE)).status_code == 200
    assert (await client.put("/api/v1/namespaces/_/triggers/t")).status_code == 200
    rule = {"trigger": "t", "action": "a"}
    assert (await client.put("/api/v1/namespaces/_/rules/r", json=rule)).status_code == 200


async def test_a_burst_waits_for_its_namespace_and_delays_no_other(
    nats: EmbeddedNats, mongo_uri: str, tmp_path: Path
) -> None:
    settings = isolated_settings(nats.url, mongo_uri, tmp_path)
    broker = BrokerProcess(settings, tmp_path / "broker.log")
    pool = TimingPool(run_s=0.04)  # 20 at a time: the backlog drains at about 500 runs/s
    fires = 5000
    async with AsyncExitStack() as stack:
        bus = await stack.enter_async_context(JetStreamBus(settings))
        await bus.provision()
        store = EntityStore(bus)
        burst_ns, quiet_ns = f"burst-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
        limited = msgspec.structs.replace(FAST, concurrentInvocations=20)
        burst = await client_for(
            stack, settings, bus, await create_namespace(store, burst_ns, limits=limited)
        )
        quiet = await client_for(stack, settings, bus, await create_namespace(store, quiet_ns, limits=FAST))
        activations = await stack.enter_async_context(ActivationStore.from_settings(settings))
        broker.start()
        stack.callback(broker.stop)
        await broker.wait_running()
        await stack.enter_async_context(InvokerAgent(bus, store, pool, max_in_flight=16))
        await trigger_with_rule(burst)
        await trigger_with_rule(quiet)

        accepted = await fire_burst(burst, broker, fires)
        assert accepted == {fire_id(burst_ns, "t", f"k-{i}") for i in range(fires)}
        run_ids = {rule_activation_id(aid, f"{burst_ns}/r") for aid in accepted}
        # While the backlog drains, the quiet namespace's events start at once.
        backlog = sum(1 for rid in run_ids if rid not in pool.started)
        assert backlog > 1000, f"only {backlog} runs were left to drain: the test measures nothing"
        latencies = await quiet_latencies(quiet, quiet_ns, pool, until=lambda: len(pool.started) >= fires)
        await eventually(lambda: _true(run_ids <= pool.started.keys()), 120, "every burst run")
        await wait_stored(activations, burst_ns, 2 * fires, bus)

    assert all(pool.runs[rid] == 1 for rid in run_ids), "each run executed exactly once"
    assert pool.most[burst_ns] <= 20
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"backlog {backlog} runs; quiet namespace: {len(latencies)} fires, p50 "
        f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert len(latencies) >= 30 and p99 < 0.25, f"quiet namespace p99 {p99 * 1000:.0f} ms: {latencies[-5:]}"
    log = (tmp_path / "broker.log").read_text()
    assert log.count("--- start ---") == 1, "the broker was killed and restarted once"
    assert "Traceback" not in log, log


async def fire_burst(client: httpx.AsyncClient, broker: BrokerProcess, fires: int) -> set[str]:
    """`fires` fires with idempotency keys, as fast as 16 callers go, with the broker SIGKILLed mid-burst.
    None may be refused: a 503 while NATS is busy is retried with its key, anything else fails the test."""
    accepted: set[str] = set()
    halfway = asyncio.Event()
    keys = collections.deque(range(fires))

    async def firer() -> None:
        while keys:
            i = keys.popleft()
            while True:
                r = await client.post(
                    "/api/v1/namespaces/_/triggers/t", json={"i": i}, headers={"Idempotency-Key": f"k-{i}"}
                )
                if r.status_code != 503:
                    break
            assert r.status_code == 202, r.text
            accepted.add(r.json()["activationId"])
            if len(accepted) >= fires // 2:
                halfway.set()

    async def killer() -> None:
        await halfway.wait()
        await broker.restart_after_kill()

    await asyncio.gather(killer(), *(firer() for _ in range(16)))
    return accepted


async def quiet_latencies(
    client: httpx.AsyncClient, namespace: str, pool: TimingPool, until: object
) -> list[float]:
    """Fires one event every 100 ms until `until()` (the backlog drained); answers each fire's wait from the
    request to its run's start."""
    assert callable(until)
    sent: dict[str, float] = {}
    while not until() and len(sent) < 600:
        at = time.time()
        r = await client.post("/api/v1/namespaces/_/triggers/t", json={"n": len(sent)})
        assert r.status_code == 202, r.text
        sent[rule_activation_id(r.json()["activationId"], f"{namespace}/r")] = at
        await asyncio.sleep(max(0.0, 0.1 - (time.time() - at)))
    await eventually(lambda: _true(sent.keys() <= pool.started.keys()), 30, "the quiet namespace's runs")
    return [pool.started[rid] - at for rid, at in sent.items()]


async def wait_stored(activations: ActivationStore, namespace: str, expected: int, bus: JetStreamBus) -> None:
    end = time.monotonic() + 120
    while (count := await activations.count(namespace)) < expected:
        assert time.monotonic() < end, f"{count} of {expected} stored\n{await consumers(bus)}"
        await asyncio.sleep(0.2)


async def test_jetstream_holds_a_namespace_to_its_concurrency_across_invokers(
    bus: JetStreamBus, store: EntityStore, settings: Settings, activation_store: ActivationStore
) -> None:
    namespace = f"few-{uuid.uuid4().hex[:8]}"
    key = await create_namespace(
        store, namespace, limits=msgspec.structs.replace(FAST, concurrentInvocations=3)
    )
    pool = TimingPool(run_s=0.1)
    async with AsyncExitStack() as stack:
        client = await client_for(stack, settings, bus, key)
        throttles = await stack.enter_async_context(Throttles(bus, store, settings))
        queues = InvokeQueues(bus, settings, throttles.concurrency_of)
        await stack.enter_async_context(
            RuleEngine(bus, store, settings, schedule=throttles.book_event_run, queues=queues)
        )
        for name in ("one", "two"):
            await stack.enter_async_context(InvokerAgent(bus, store, pool, invoker_id=name, max_in_flight=8))
        await trigger_with_rule(client)
        for i in range(30):
            assert (await client.post("/api/v1/namespaces/_/triggers/t", json={"i": i})).status_code == 202
        seen: list[dict[str, int]] = []

        async def backlog_shown() -> bool:
            seen.append((await client.get("/api/v1/namespaces/_/queue")).json())
            return seen[-1]["running"] == 3 and seen[-1]["queued"] > 0

        await eventually(backlog_shown, 10, "the backlog in GET …/queue")
        # Only this namespace's: the session's server may hold other tests' runs, which these invokers take too.
        await eventually(lambda: _true(pool.runs_of[namespace] >= 30), 30, "30 runs")
        assert pool.runs_of[namespace] == 30
        queue = await bus.consumer(invoke_queue(settings, namespace, 3))

        async def drained() -> bool:
            return (await client.get("/api/v1/namespaces/_/queue")).json() == {
                "queued": 0,
                "running": 0,
                "concurrentInvocations": 3,
            }

        await eventually(drained, 10, "an empty queue")
    assert pool.most[namespace] == 3
    assert queue.max_ack_pending == 3
    assert all(shown["running"] <= 3 for shown in seen)


async def test_a_run_that_waits_too_long_is_dead_lettered_as_throttled_and_redriven(
    store: EntityStore, settings: Settings, activation_store: ActivationStore
) -> None:
    impatient = msgspec.structs.replace(settings, max_queue_wait_s=1.0)
    namespace = f"wait-{uuid.uuid4().hex[:8]}"
    key = await create_namespace(
        store, namespace, limits=msgspec.structs.replace(FAST, concurrentInvocations=1)
    )
    pool = TimingPool()
    async with AsyncExitStack() as stack:
        bus = await stack.enter_async_context(JetStreamBus(impatient))
        store = EntityStore(bus)
        client = await client_for(stack, impatient, bus, key)
        throttles = await stack.enter_async_context(Throttles(bus, store, impatient))
        queues = InvokeQueues(bus, impatient, throttles.concurrency_of)
        await stack.enter_async_context(
            RuleEngine(bus, store, impatient, schedule=throttles.book_event_run, queues=queues)
        )
        await stack.enter_async_context(InvokerAgent(bus, store, pool))
        await stack.enter_async_context(ActivationRecorder(bus, activation_store))
        await trigger_with_rule(client)
        # The first run holds the namespace's one slot for 2.5 s; the second waits in the queue meanwhile.
        first = await fire(client, {"sleep": 2.5})
        holder = rule_activation_id(first, f"{namespace}/r")
        await eventually(lambda: _true(holder in pool.started), 10, "the run that holds the slot")
        second = await fire(client, {"sleep": 0})
        waited = rule_activation_id(second, f"{namespace}/r")
        letters = DeadLetters(bus, queues)

        async def dead_lettered() -> bool:
            return bool(await letters.list(namespace))

        await eventually(dead_lettered, 15, "the throttled run's dead letter")
        (letter,) = await letters.list(namespace)
        assert letter.id == waited and letter.reason.status == "throttled"
        assert "did not start within 1 s" in letter.reason.error
        assert waited not in pool.runs, "a throttled run does not run"
        record = await _eventually_record(activation_store, namespace, waited)
        assert record.response.status == "application error"
        redriven = await letters.redrive(namespace, letter.id, int(time.time() * 1000))
        await eventually(lambda: _true(redriven in pool.runs), 15, "the redriven run")
        assert not await letters.list(namespace)


async def fire(client: httpx.AsyncClient, payload: dict[str, float]) -> str:
    r = await client.post("/api/v1/namespaces/_/triggers/t", json=payload)
    assert r.status_code == 202, r.text
    return str(r.json()["activationId"])


async def _eventually_record(activations: ActivationStore, namespace: str, aid: str) -> Activation:
    async def stored() -> bool:
        try:
            await activations.get(namespace, aid)
        except Exception:
            return False
        return True

    await eventually(stored, 15, f"record {aid}")
    return await activations.get(namespace, aid)


async def _true(value: bool) -> bool:
    return value
