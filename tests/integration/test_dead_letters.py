"""Retries and dead letters of rule-fired invocations over real NATS and MongoDB, with an invoker agent whose
pool is a stand-in that fails a set number of times: the attempt records, the letter, and the API on it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from broker import codec, subjects
from broker.activation_store import ActivationStore
from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, annotation, new_activation_id
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.dead_letters import DeadLetter, DeadLetters, FailureReason, attempt_ids, redrive_id
from broker.entities import ACTIONS, Action, Exec
from broker.entity_store import EntityStore
from broker.errors import NotFound
from broker.health import now_ms
from broker.invocations import Invocation
from broker.recorder import ActivationRecorder
from broker.retry_policy import RetryPolicy
from runtimes.contract import RunOutcome, RunRequest
from runtimes.invoker import InvokerAgent
from tests.conditions import eventually

FAST = RetryPolicy(attempts=3, delayMs=20, backoff="exponential", maxDelayMs=100)


class FlakyPool:
    """Stands in for the container pool: an action fails (an application error) as often as `failing` says
    (-1: always), then echoes its parameters."""

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}
        self.runs: list[RunRequest] = []

    async def run(self, request: RunRequest) -> RunOutcome:
        self.runs.append(request)
        now = now_ms()
        left = self.failing.get(request.init.name, 0)
        if left != 0:
            self.failing[request.init.name] = left - 1 if left > 0 else left
            return RunOutcome(start=now, end=now + 1, cold=False, status=200, body=b'{"error":"boom"}')
        value = request.run.value if isinstance(request.run.value, dict) else {}
        return RunOutcome(start=now, end=now + 1, cold=False, status=200, body=codec.encode(value))

    def ran(self, name: str) -> list[str]:
        return [r.run.activation_id for r in self.runs if r.init.name == name]


@pytest.fixture
async def app(
    settings: Settings, bus: JetStreamBus, store: EntityStore, activation_store: ActivationStore
) -> AsyncIterator[Starlette]:
    app = create_app(settings, store, activation_store)
    async with InvokeGateway(bus, health_bucket=f"invokers_{uuid.uuid4().hex[:10]}") as gateway:
        app_state(app).gateway = gateway  # the dead-letter routes reach the bus through it
        yield app


@pytest.fixture
def pool() -> FlakyPool:
    return FlakyPool()


@pytest.fixture
async def agent(
    settings: Settings, pool: FlakyPool, recorder: ActivationRecorder
) -> AsyncIterator[InvokerAgent]:
    """An invoker agent on a NATS connection of its own, like another process."""
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(JetStreamBus(settings))
        health = f"invokers_{uuid.uuid4().hex[:10]}"
        yield await stack.enter_async_context(
            InvokerAgent(bus, EntityStore(bus), pool, health_bucket=health, invoker_id="flaky")
        )


@pytest.fixture
def letters(bus: JetStreamBus) -> DeadLetters:
    return DeadLetters(bus)


def ns_of(client: httpx.AsyncClient) -> str:
    namespace: str = client.namespace  # type: ignore[attr-defined]
    return namespace


async def create_action(store: EntityStore, namespace: str, name: str) -> None:
    action = Action(
        namespace=namespace, name=name, exec=Exec(kind="python:3.11", code="def main(a): return a")
    )
    await store.create(ACTIONS, action)


async def fire(bus: JetStreamBus, namespace: str, name: str, retry: RetryPolicy | None = FAST) -> Invocation:
    """Publish an invocation onto INVOKE as the rule engine does for one rule of one trigger fire."""
    invocation = Invocation(
        activationId=new_activation_id(),
        namespace=namespace,
        action=f"{namespace}/{name}",
        params={"n": 1},
        subject="subject-uuid",
        cause=new_activation_id(),
        rule=f"{namespace}/rule",
        trigger=f"{namespace}/trigger",
        retry=retry,
        published=now_ms(),
    )
    await bus.publish(
        subjects.invoke_subject(namespace, name), codec.encode(invocation), msg_id=invocation.activationId
    )
    return invocation


async def stored(store: ActivationStore, namespace: str, aid: str) -> Activation:
    found: list[Activation] = []

    async def present() -> bool:
        with contextlib.suppress(NotFound):
            found.append(await store.get(namespace, aid))
        return bool(found)

    await eventually(present)
    return found[0]


async def letter_of(letters: DeadLetters, namespace: str, letter_id: str) -> DeadLetter:
    found: list[DeadLetter] = []

    async def present() -> bool:
        with contextlib.suppress(NotFound):
            found.append(await letters.get(namespace, letter_id))
        return bool(found)

    await eventually(present)
    return found[0]


async def settled(agent: InvokerAgent) -> None:
    """The agent has acked everything it took: whatever it was going to publish is published."""

    async def idle() -> bool:
        return agent.in_flight == 0

    await eventually(idle)


# -- retries and the letter --------------------------------------------------------------------------------


async def test_a_run_failing_every_attempt_leaves_its_records_and_one_dead_letter(
    ns_client: httpx.AsyncClient,
    store: EntityStore,
    bus: JetStreamBus,
    activation_store: ActivationStore,
    letters: DeadLetters,
    pool: FlakyPool,
    agent: InvokerAgent,
) -> None:
    ns = ns_of(ns_client)
    await create_action(store, ns, "flaky")
    pool.failing["flaky"] = -1
    inv = await fire(bus, ns, "flaky")
    letter = await letter_of(letters, ns, inv.activationId)
    ids = attempt_ids(inv.activationId, 3)
    assert pool.ran("flaky") == ids  # each attempt ran under its own id, in order
    records = [await stored(activation_store, ns, aid) for aid in ids]
    assert len(set(ids)) == 3
    assert all(r.cause == inv.cause and r.response.status == APPLICATION_ERROR for r in records)
    assert [annotation(r, "attempt") for r in records] == [None, 2, 3]
    assert [annotation(r, "retryOf") for r in records] == [None, inv.activationId, inv.activationId]
    # The backoff is JetStream's redelivery delay: 20 ms, then 40 ms (less a millisecond of rounding).
    assert records[1].start - records[0].start >= 19 and records[2].start - records[1].start >= 39
    await settled(agent)
    assert await activation_store.count(ns) == 3 and len(pool.runs) == 3

    assert letter.id == inv.activationId and letter.namespace == ns and letter.action == f"{ns}/flaky"
    assert (letter.rule, letter.trigger, letter.cause) == (inv.rule, inv.trigger, inv.cause)
    assert letter.attempts == 3 and letter.activationIds == ids
    assert (letter.reason.status, letter.reason.error) == (APPLICATION_ERROR, "boom")
    assert letter.invocation == inv
    assert letter.firstFailed <= records[0].end and letter.lastFailed == records[2].end

    base = "/api/v1/namespaces/_/deadletters"
    r = await ns_client.get(base)
    assert r.status_code == 200, r.text
    assert r.json() == [codec.to_builtins(letter)]
    r = await ns_client.get(base, params={"count": "true"})
    assert r.status_code == 200 and r.json() == {"deadletters": 1}
    r = await ns_client.get(f"{base}/{inv.activationId}")
    assert r.status_code == 200 and r.json()["reason"] == {"status": APPLICATION_ERROR, "error": "boom"}
    r = await ns_client.get(f"/api/v1/namespaces/{ns}/deadletters/{inv.activationId}")
    assert r.status_code == 200 and r.json()["attempts"] == 3


async def test_a_run_that_recovers_within_its_attempts_leaves_no_letter(
    ns_client: httpx.AsyncClient,
    store: EntityStore,
    bus: JetStreamBus,
    activation_store: ActivationStore,
    letters: DeadLetters,
    pool: FlakyPool,
    agent: InvokerAgent,
) -> None:
    ns = ns_of(ns_client)
    await create_action(store, ns, "wobbly")
    pool.failing["wobbly"] = 2
    inv = await fire(bus, ns, "wobbly")
    last = await stored(activation_store, ns, attempt_ids(inv.activationId, 3)[2])
    assert last.response.status == SUCCESS and last.response.result == {"n": 1}
    assert annotation(last, "attempt") == 3 and last.cause == inv.cause
    await settled(agent)
    assert await letters.count(ns) == 0 and await letters.list(ns) == []


async def test_redrive_after_a_fix_runs_it_again_and_removes_the_letter(
    ns_client: httpx.AsyncClient,
    store: EntityStore,
    bus: JetStreamBus,
    activation_store: ActivationStore,
    letters: DeadLetters,
    pool: FlakyPool,
    agent: InvokerAgent,
) -> None:
    ns = ns_of(ns_client)
    await create_action(store, ns, "broken")
    pool.failing["broken"] = -1
    inv = await fire(bus, ns, "broken")
    await letter_of(letters, ns, inv.activationId)
    await settled(agent)

    pool.failing["broken"] = 0  # "fixed"
    r = await ns_client.post(f"/api/v1/namespaces/_/deadletters/{inv.activationId}/redrive")
    assert r.status_code == 202, r.text
    new_id = r.json()["activationId"]
    assert r.json() == {"activationId": new_id} and new_id == redrive_id(inv.activationId)
    assert new_id not in attempt_ids(inv.activationId, 3)
    record = await stored(activation_store, ns, new_id)
    assert record.response.status == SUCCESS and record.response.result == {"n": 1}
    assert record.cause == inv.cause
    r = await ns_client.get(f"/api/v1/namespaces/_/deadletters/{inv.activationId}")
    assert r.status_code == 404 and set(r.json()) == {"error", "code"}
    r = await ns_client.post(f"/api/v1/namespaces/_/deadletters/{inv.activationId}/redrive")
    assert r.status_code == 404
    await settled(agent)
    assert pool.ran("broken")[-1] == new_id and len(pool.ran("broken")) == 4


async def test_delete_one_and_purge_all(
    ns_client: httpx.AsyncClient,
    store: EntityStore,
    bus: JetStreamBus,
    letters: DeadLetters,
    pool: FlakyPool,
    agent: InvokerAgent,
) -> None:
    ns = ns_of(ns_client)
    await create_action(store, ns, "gone")
    pool.failing["gone"] = -1
    once = RetryPolicy(attempts=1)
    fired = []
    for _ in range(3):  # one after the other: the invoker runs what it takes concurrently
        fired.append(await fire(bus, ns, "gone", once))
        assert (await letter_of(letters, ns, fired[-1].activationId)).attempts == 1
    base = "/api/v1/namespaces/_/deadletters"
    r = await ns_client.get(base)
    assert [item["id"] for item in r.json()] == [inv.activationId for inv in reversed(fired)]  # newest first
    r = await ns_client.get(base, params={"skip": "1", "limit": "1"})
    assert [item["id"] for item in r.json()] == [fired[1].activationId]
    r = await ns_client.get(base, params={"count": "true", "skip": "1"})
    assert r.json() == {"deadletters": 2}

    r = await ns_client.delete(f"{base}/{fired[0].activationId}")
    assert r.status_code == 200 and r.json()["id"] == fired[0].activationId
    assert (await ns_client.delete(f"{base}/{fired[0].activationId}")).status_code == 404
    r = await ns_client.delete(base)
    assert r.status_code == 200 and r.json() == {"purged": 2}
    assert (await ns_client.get(base, params={"count": "true"})).json() == {"deadletters": 0}
    assert (await ns_client.get(base)).json() == []
    assert (await ns_client.delete(base)).json() == {"purged": 0}


async def test_a_status_the_policy_does_not_retry_is_dead_lettered_without_retrying(
    ns_client: httpx.AsyncClient,
    store: EntityStore,
    bus: JetStreamBus,
    activation_store: ActivationStore,
    letters: DeadLetters,
    pool: FlakyPool,
    agent: InvokerAgent,
) -> None:
    ns = ns_of(ns_client)
    await create_action(store, ns, "picky")
    pool.failing["picky"] = -1
    inv = await fire(bus, ns, "picky", RetryPolicy(attempts=3, delayMs=20, on=["whisk internal error"]))
    letter = await letter_of(letters, ns, inv.activationId)
    assert letter.attempts == 1 and letter.activationIds == [inv.activationId]
    assert letter.reason.status == APPLICATION_ERROR
    await settled(agent)
    assert pool.ran("picky") == [inv.activationId]
    assert (await stored(activation_store, ns, inv.activationId)).response.status == APPLICATION_ERROR
    assert await activation_store.count(ns) == 1


async def test_without_a_policy_a_failure_is_its_record_alone(
    ns_client: httpx.AsyncClient,
    store: EntityStore,
    bus: JetStreamBus,
    activation_store: ActivationStore,
    letters: DeadLetters,
    pool: FlakyPool,
    agent: InvokerAgent,
) -> None:
    ns = ns_of(ns_client)
    await create_action(store, ns, "plain")
    pool.failing["plain"] = -1
    inv = await fire(bus, ns, "plain", retry=None)
    record = await stored(activation_store, ns, inv.activationId)
    assert record.response.status == APPLICATION_ERROR and record.cause == inv.cause
    assert annotation(record, "attempt") is None
    await settled(agent)
    assert pool.ran("plain") == [inv.activationId]
    assert await letters.count(ns) == 0 and await activation_store.count(ns) == 1


# -- the API's refusals ----------------------------------------------------------------------------------


async def test_malformed_unknown_and_foreign_letters(ns_client: httpx.AsyncClient) -> None:
    base = "/api/v1/namespaces/_/deadletters"
    for method, path in (
        ("GET", f"{base}/not-an-id"),
        ("DELETE", f"{base}/ABCDEF0123456789ABCDEF0123456789"),
        ("POST", f"{base}/{'0' * 31}/redrive"),
    ):
        r = await ns_client.request(method, path)
        assert r.status_code == 400, (method, path, r.text)
        assert set(r.json()) == {"error", "code"}
    unknown = new_activation_id()
    for method, path in (
        ("GET", f"{base}/{unknown}"),
        ("DELETE", f"{base}/{unknown}"),
        ("POST", f"{base}/{unknown}/redrive"),
    ):
        assert (await ns_client.request(method, path)).status_code == 404, (method, path)
    r = await ns_client.get(base, params={"limit": "201"})
    assert r.status_code == 400
    for method, path in (
        ("GET", "/api/v1/namespaces/someone-else/deadletters"),
        ("DELETE", "/api/v1/namespaces/someone-else/deadletters"),
        ("GET", f"/api/v1/namespaces/someone-else/deadletters/{unknown}"),
        ("POST", f"/api/v1/namespaces/someone-else/deadletters/{unknown}/redrive"),
    ):
        assert (await ns_client.request(method, path)).status_code == 403, (method, path)


async def test_letters_of_one_namespace_are_invisible_to_another(
    ns_client: httpx.AsyncClient, letters: DeadLetters
) -> None:
    # Namespaces whose names share a prefix must not see each other's letters.
    ns = ns_of(ns_client)
    other = f"{ns}x"
    letter = DeadLetter(
        id=new_activation_id(),
        namespace=other,
        action=f"{other}/a",
        reason=FailureReason(status=APPLICATION_ERROR, error="x"),
        attempts=1,
        activationIds=[],
        invocation=Invocation(activationId=new_activation_id(), namespace=other, action=f"{other}/a"),
        firstFailed=1,
        lastFailed=1,
    )
    await letters.publish(letter)
    assert await letters.count(other) == 1
    assert (await ns_client.get("/api/v1/namespaces/_/deadletters", params={"count": "true"})).json() == {
        "deadletters": 0
    }
    r = await ns_client.get(f"/api/v1/namespaces/_/deadletters/{letter.id}")
    assert r.status_code == 404
    assert await letters.purge(other) == 1
