"""Invoking over real NATS and MongoDB with invoker agents whose container pool is a fake: the API's answers,
the records, invoker health, sharing work between invokers and losing none when one dies."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from api.routes import invoke, invokers
from broker import codec, subjects
from broker.activation_store import ActivationStore
from broker.activations import Activation, new_activation_id
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import BackboneUnavailable, NotFound
from broker.health import Heartbeat, now_ms
from broker.invocations import Invocation
from broker.recorder import ActivationRecorder
from runtimes.contract import RunOutcome, RunRequest
from runtimes.invoker import InvokerAgent
from tests.conditions import eventually

UNAVAILABLE = "The server is currently unavailable (because it is overloaded or down for maintenance)."


class FakePool:
    """Runs "actions" whose code names a behaviour: `echo`, `error`, `crash`, `explode`, `sleep:<ms>`, `array`."""

    def __init__(self, name: str = "pool") -> None:
        self.name = name
        self.runs: list[RunRequest] = []
        self.running: set[str] = set()

    async def run(self, request: RunRequest) -> RunOutcome:
        self.runs.append(request)
        self.running.add(request.run.activation_id)
        try:
            start = now_ms()
            code = request.init.code
            value = request.run.value
            if code == "explode":
                raise RuntimeError("no container for you")
            if code.startswith("sleep:"):
                await asyncio.sleep(int(code.split(":")[1]) / 1000)
            if code == "error":
                return RunOutcome(start=start, end=now_ms(), cold=False, status=200, body=b'{"error":"boom"}')
            if code == "crash":
                return RunOutcome(start=start, end=now_ms(), cold=False, crashed=True)
            if code == "array":
                return RunOutcome(start=start, end=now_ms(), cold=False, status=200, body=b"[1,2,3]")
            if code == "add":
                value = {**value, "n": value.get("n", 0) + 1, "by": self.name}
            body = codec.encode({**value, "ran_on": self.name} if isinstance(value, dict) else value)
            logs = [f"2024-01-01T00:00:00.000000Z      stdout: {code}"]
            return RunOutcome(start=start, end=now_ms(), cold=False, status=200, body=body, logs=logs)
        finally:
            self.running.discard(request.run.activation_id)

    def ran(self, namespace: str) -> list[str]:
        return [r.run.activation_id for r in self.runs if r.run.namespace == namespace]


@pytest.fixture
def bucket() -> str:
    """A heartbeat bucket per test, so one test's invokers never count as another's."""
    return f"invokers_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def app(
    settings: Settings, bus: JetStreamBus, store: EntityStore, activation_store: ActivationStore, bucket: str
) -> AsyncIterator[Starlette]:
    app = create_app(settings, store, activation_store)
    present = {id(r.endpoint) for r in app.router.routes if hasattr(r, "endpoint")}
    for extra in (*invoke.routes, *invokers.routes):
        if id(extra.endpoint) not in present:
            app.router.routes.append(extra)
    async with InvokeGateway(bus, health_bucket=bucket, store_poll_s=0.5) as gateway:
        app_state(app).gateway = gateway
        yield app


@contextlib.asynccontextmanager
async def agent(
    settings: Settings, pool: FakePool, bucket: str, **kwargs: Any
) -> AsyncIterator[InvokerAgent]:
    """An invoker agent on a NATS connection of its own, like another process."""
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(JetStreamBus(settings))
        agent = InvokerAgent(
            bus, EntityStore(bus), pool, health_bucket=bucket, invoker_id=pool.name, **kwargs
        )
        yield await stack.enter_async_context(agent)


@pytest.fixture
async def fake_pool(settings: Settings, bucket: str) -> AsyncIterator[FakePool]:
    pool = FakePool("solo")
    async with agent(settings, pool, bucket):
        yield pool


async def create(client: httpx.AsyncClient, name: str, code: str, **extra: Any) -> None:
    body = {"exec": {"kind": "python:default", "code": code}, **extra}
    r = await client.put(f"/api/v1/namespaces/_/actions/{name}", json=body)
    assert r.status_code == 200, r.text


async def post(client: httpx.AsyncClient, name: str, body: Any = None, **query: str) -> httpx.Response:
    return await client.post(f"/api/v1/namespaces/_/actions/{name}", json=body, params=query)


async def stored(store: ActivationStore, namespace: str, aid: str) -> Activation:
    found: list[Activation] = []

    async def present() -> bool:
        with contextlib.suppress(NotFound):
            found.append(await store.get(namespace, aid))
        return bool(found)

    await eventually(present)
    return found[0]


def notes(record: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a.get("value") for a in record["annotations"]}


# -- the invoke API --------------------------------------------------------------------------------------


async def test_non_blocking_answers_202_and_the_record_is_stored(
    ns_client: httpx.AsyncClient,
    fake_pool: FakePool,
    recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:
    await create(ns_client, "echo", "echo", parameters=[{"key": "bound", "value": 1}])
    r = await post(ns_client, "echo", {"x": 2})
    assert r.status_code == 202, r.text
    aid = r.json()["activationId"]
    assert r.json() == {"activationId": aid} and r.headers["x-openwhisk-activation-id"] == aid
    record = await stored(activation_store, ns_client.namespace, aid)  # type: ignore[attr-defined]
    assert record.response.result == {"bound": 1, "x": 2, "ran_on": "solo"}
    assert record.name == "echo" and record.logs == ["2024-01-01T00:00:00.000000Z      stdout: echo"]
    r = await ns_client.get(f"/api/v1/namespaces/_/activations/{aid}")
    assert r.status_code == 200 and r.json()["response"]["status"] == "success"


async def test_blocking_success_answers_200_with_the_record_or_the_result(
    ns_client: httpx.AsyncClient, fake_pool: FakePool
) -> None:
    await create(ns_client, "echo", "echo")
    r = await post(ns_client, "echo", {"x": 1}, blocking="true")
    assert r.status_code == 200, r.text
    record = r.json()
    assert r.headers["x-openwhisk-activation-id"] == record["activationId"]
    assert record["response"] == {
        "status": "success",
        "success": True,
        "result": {"x": 1, "ran_on": "solo"},
        "size": len('{"x":1,"ran_on":"solo"}'),
    }
    assert notes(record)["path"] == f"{ns_client.namespace}/echo"  # type: ignore[attr-defined]
    assert notes(record)["kind"] == "python:3.11" and notes(record)["timeout"] is False
    assert notes(record)["waitTime"] >= 0
    r = await post(ns_client, "echo", {"x": 1}, blocking="true", result="true")
    assert r.status_code == 200 and r.json() == {"x": 1, "ran_on": "solo"}
    await create(ns_client, "arr", "array")
    r = await post(ns_client, "arr", blocking="true", result="true")
    assert r.status_code == 200 and r.json() == [1, 2, 3]


async def test_blocking_failures_answer_502_or_500(ns_client: httpx.AsyncClient, fake_pool: FakePool) -> None:
    await create(ns_client, "err", "error")
    r = await post(ns_client, "err", blocking="true")
    assert r.status_code == 502
    assert r.json()["response"]["status"] == "application error"
    r = await post(ns_client, "err", blocking="true", result="true")
    assert r.status_code == 502 and r.json() == {"error": "boom"}
    await create(ns_client, "crash", "crash")
    r = await post(ns_client, "crash", blocking="true")
    assert r.status_code == 502
    assert r.json()["response"]["result"] == {
        "error": "The action did not produce a valid response and exited unexpectedly."
    }
    await create(ns_client, "boom", "explode")
    r = await post(ns_client, "boom", blocking="true")
    assert r.status_code == 500
    assert r.json()["response"] == {
        "status": "whisk internal error",
        "success": False,
        "result": {"error": "Failed to provision resources to run the action."},
    }


async def test_blocking_past_the_wait_answers_202_and_the_run_continues(
    ns_client: httpx.AsyncClient,
    fake_pool: FakePool,
    recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:
    await create(ns_client, "slow", "sleep:1500")
    started = time.monotonic()
    r = await post(ns_client, "slow", blocking="true", timeout="300")
    assert r.status_code == 202, r.text
    assert 0.25 < time.monotonic() - started < 1.4
    aid = r.json()["activationId"]
    record = await stored(activation_store, ns_client.namespace, aid)  # type: ignore[attr-defined]
    assert record.response.status == "success" and record.duration is not None and record.duration >= 1400


async def test_request_errors(ns_client: httpx.AsyncClient, fake_pool: FakePool) -> None:
    await create(ns_client, "echo", "echo")
    r = await post(ns_client, "nope", blocking="true")
    assert r.status_code == 404 and r.json()["error"] == "The requested resource does not exist."
    for bad in ("0", "60001", "x"):
        r = await post(ns_client, "echo", blocking="true", timeout=bad)
        assert r.status_code == 400
        assert "Timeout must be number of milliseconds up to 60000." in r.json()["error"]
    r = await ns_client.post("/api/v1/namespaces/_/actions/echo", content=b"[1, 2]")
    assert r.status_code == 400
    r = await ns_client.post(
        "/api/v1/namespaces/_/actions/echo", content=b'{"x": "' + b"y" * 1024 * 1024 + b'"}'
    )
    assert r.status_code == 413
    r = await ns_client.post(
        "/api/v1/namespaces/_/actions/echo", params={"blocking": "true", "result": "true"}
    )
    assert r.status_code == 200 and r.json() == {"ran_on": "solo"}  # an empty body is `{}`


async def test_final_parameters_cannot_be_overridden(
    ns_client: httpx.AsyncClient, fake_pool: FakePool
) -> None:
    await create(
        ns_client,
        "fin",
        "echo",
        parameters=[{"key": "k", "value": 1}],
        annotations=[{"key": "final", "value": True}],
    )
    r = await post(ns_client, "fin", {"k": 2}, blocking="true")
    assert r.status_code == 400
    assert r.json()["error"] == "Request defines parameters that are not allowed (e.g., reserved properties)."


async def test_packages_and_bindings_merge_parameters_and_annotate_the_binding(
    ns_client: httpx.AsyncClient, fake_pool: FakePool
) -> None:
    r = await ns_client.put(
        "/api/v1/namespaces/_/packages/lib", json={"parameters": [{"key": "p", "value": "pkg"}]}
    )
    assert r.status_code == 200, r.text
    await create(ns_client, "lib/echo", "echo", parameters=[{"key": "a", "value": "action"}])
    ns = ns_client.namespace  # type: ignore[attr-defined]
    binding = {"binding": {"namespace": ns, "name": "lib"}, "parameters": [{"key": "p", "value": "bound"}]}
    r = await ns_client.put("/api/v1/namespaces/_/packages/mine", json=binding)
    assert r.status_code == 200, r.text
    r = await post(ns_client, "lib/echo", {"x": 1}, blocking="true")
    assert r.json()["response"]["result"] == {"p": "pkg", "a": "action", "x": 1, "ran_on": "solo"}
    assert "binding" not in notes(r.json()) and notes(r.json())["path"] == f"{ns}/lib/echo"
    r = await post(ns_client, "mine/echo", {"x": 1}, blocking="true")
    assert r.json()["response"]["result"] == {"p": "bound", "a": "action", "x": 1, "ran_on": "solo"}
    assert notes(r.json())["binding"] == f"{ns}/mine" and notes(r.json())["path"] == f"{ns}/lib/echo"


async def test_the_api_key_reaches_only_actions_that_ask(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], fake_pool: FakePool
) -> None:
    await create(ns_client, "nokey", "echo")  # the API adds provide-api-key:false
    await create(ns_client, "key", "echo", annotations=[{"key": "provide-api-key", "value": True}])
    await post(ns_client, "nokey", blocking="true")
    await post(ns_client, "key", blocking="true")
    by_name = {r.run.action_name.rpartition("/")[2]: r for r in fake_pool.runs[-2:]}
    assert by_name["nokey"].run.api_key is None
    assert "__OW_API_KEY" not in by_name["nokey"].init.env
    assert by_name["key"].run.api_key == namespace[1]
    assert by_name["key"].init.env["__OW_API_KEY"] == namespace[1]
    assert by_name["key"].init.env["__OW_NAMESPACE"] == namespace[0]


async def test_a_sequence_chains_results_and_links_its_components(
    ns_client: httpx.AsyncClient,
    fake_pool: FakePool,
    recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await create(ns_client, "add", "add")
    await create(ns_client, "err", "error")
    seq = {"exec": {"kind": "sequence", "components": [f"/{ns}/add", f"/{ns}/add", f"/{ns}/add"]}}
    assert (await ns_client.put("/api/v1/namespaces/_/actions/seq", json=seq)).status_code == 200
    r = await post(ns_client, "seq", {"n": 10}, blocking="true")
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["response"]["result"] == {"n": 13, "by": "solo", "ran_on": "solo"}
    assert notes(record) == {
        "topmost": True,
        "path": f"{ns}/seq",
        "kind": "sequence",
        "limits": notes(record)["limits"],
        "traceId": notes(record)["traceId"],  # a trace started for an invoke that came without one
    }
    assert len(notes(record)["traceId"]) == 32
    assert notes(record)["limits"]["memory"] == 256
    assert len(record["logs"]) == 3
    components = [await stored(activation_store, ns, aid) for aid in record["logs"]]
    assert all(c.cause == record["activationId"] for c in components)
    assert all({a.key: a.value for a in c.annotations}["causedBy"] == "sequence" for c in components)
    assert record["duration"] == sum(c.duration or 0 for c in components)
    # An error stops the chain, and the sequence answers with it.
    stop = {"exec": {"kind": "sequence", "components": [f"/{ns}/add", f"/{ns}/err", f"/{ns}/add"]}}
    assert (await ns_client.put("/api/v1/namespaces/_/actions/stop", json=stop)).status_code == 200
    r = await post(ns_client, "stop", {"n": 0}, blocking="true")
    assert r.status_code == 502
    assert r.json()["response"]["result"] == {"error": "boom"} and len(r.json()["logs"]) == 2
    # A nested sequence is one component, whose own components are caused by it.
    outer = {"exec": {"kind": "sequence", "components": [f"/{ns}/seq", f"/{ns}/add"]}}
    assert (await ns_client.put("/api/v1/namespaces/_/actions/outer", json=outer)).status_code == 200
    r = await post(ns_client, "outer", {"n": 0}, blocking="true", result="true")
    assert r.status_code == 200 and r.json()["n"] == 4


async def test_an_action_deleted_before_it_runs_is_recorded_as_gone(
    bus: JetStreamBus, namespace: tuple[str, str], fake_pool: FakePool, recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:  # fmt: skip
    ns = namespace[0]
    invocation = Invocation(
        activationId=new_activation_id(), namespace=ns, action=f"{ns}/ghost", published=now_ms()
    )
    await bus.publish(
        subjects.invoke_subject(ns, "ghost"), codec.encode(invocation), msg_id=invocation.activationId
    )
    record = await stored(activation_store, ns, invocation.activationId)
    assert record.response.status == "application error"
    assert record.response.result == {"error": "Action could not be found or may have been deleted."}


class ElectingStore(EntityStore):
    """The entity store as the invoker sees it while the bucket's stream elects a leader: the first reads fail."""

    def __init__(self, bus: JetStreamBus, failures: int) -> None:
        super().__init__(bus)
        self.failures = failures

    async def get(self, collection: Any, namespace: str, name: str) -> Any:
        if self.failures:
            self.failures -= 1
            raise BackboneUnavailable("reading actions: NATS unavailable (nats: timeout)")
        return await super().get(collection, namespace, name)


async def test_an_action_that_cannot_be_read_for_a_moment_runs_later_not_failed(
    settings: Settings, ns_client: httpx.AsyncClient, namespace: tuple[str, str], bucket: str,
    recorder: ActivationRecorder, activation_store: ActivationStore,
) -> None:  # fmt: skip
    await create(ns_client, "patient", "echo")
    pool = FakePool("patient")
    async with JetStreamBus(settings) as bus:
        store = ElectingStore(bus, failures=2)
        async with InvokerAgent(bus, store, pool, health_bucket=bucket, invoker_id=pool.name):
            r = await post(ns_client, "patient", {"n": 1})
            assert r.status_code == 202, r.text
            record = await stored(activation_store, namespace[0], r.json()["activationId"])
    assert store.failures == 0
    assert record.response.success, record.response
    assert pool.ran(namespace[0]) == [record.activationId]


# -- invoker health --------------------------------------------------------------------------------------


async def test_no_invoker_answers_503_and_nothing_is_published(
    ns_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await create(ns_client, "echo", "echo")
    for query in ({}, {"blocking": "true"}):
        r = await post(ns_client, "echo", **query)
        assert r.status_code == 503
        assert r.json()["error"] == UNAVAILABLE
    assert (await client.get("/invokers")).json() == {}
    assert (await client.get("/invokers/healthy/count")).json() == 0


async def test_invokers_are_listed_up_then_down_after_they_stop(
    client: httpx.AsyncClient, settings: Settings, bucket: str
) -> None:
    async with agent(settings, FakePool("first"), bucket), agent(settings, FakePool("second"), bucket):
        r = await client.get("/invokers")
        assert r.status_code == 200
        assert r.json() == {"invoker0/0": "up", "invoker1/1": "up"}
        assert (await client.get("/invokers/healthy/count")).json() == 2
    r = await client.get("/invokers")
    assert r.json() == {"invoker0/0": "down", "invoker1/1": "down"}


async def test_heartbeats_say_what_the_invoker_carries(
    bus: JetStreamBus, settings: Settings, bucket: str
) -> None:
    async with agent(settings, FakePool("beating"), bucket, max_in_flight=4) as a:
        kv = await bus.js.key_value(bucket)
        first = codec.decode((await kv.get("beating")).value or b"", Heartbeat)
        await eventually(lambda: _later(kv, first.at))
        beat = codec.decode((await kv.get("beating")).value or b"", Heartbeat)
        assert beat.id == "beating" and beat.in_flight == 0 and beat.started == first.started
        assert a.in_flight == 0


async def _later(kv: Any, at: int) -> bool:
    beat = codec.decode((await kv.get("beating")).value or b"", Heartbeat)
    return beat.at > at


# -- scale-out -------------------------------------------------------------------------------------------


async def test_two_invokers_share_the_work(
    ns_client: httpx.AsyncClient, settings: Settings, bucket: str, recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:  # fmt: skip
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await create(ns_client, "work", "sleep:5")
    one, two = FakePool("one"), FakePool("two")
    async with agent(settings, one, bucket), agent(settings, two, bucket):
        ids = await asyncio.gather(*(_fire(ns_client, "work") for _ in range(120)))
        await eventually(lambda: _all_run([one, two], ns, 120))
    assert len(one.ran(ns)) > 10 and len(two.ran(ns)) > 10
    assert sorted(one.ran(ns) + two.ran(ns)) == sorted(ids)
    await eventually(lambda: _count(activation_store, ns, 120))


async def test_an_invoker_dying_mid_load_loses_nothing(
    ns_client: httpx.AsyncClient, settings: Settings, bucket: str, recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:  # fmt: skip
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await create(ns_client, "work", "sleep:200")
    doomed, survivor = FakePool("doomed"), FakePool("survivor")
    async with contextlib.AsyncExitStack() as stack:
        killed_bus = await stack.enter_async_context(JetStreamBus(settings))
        victim = InvokerAgent(
            killed_bus, EntityStore(killed_bus), doomed, health_bucket=bucket, invoker_id="doomed", ack_wait_s=2.0,
            max_in_flight=8,
        )  # fmt: skip
        await stack.enter_async_context(victim)
        await stack.enter_async_context(agent(settings, survivor, bucket, ack_wait_s=2.0, max_in_flight=8))
        ids = await asyncio.gather(*(_fire(ns_client, "work") for _ in range(60)))
        await eventually(lambda: _running(doomed))
        # Like SIGKILL: the connection drops with runs in flight, nothing is acked, nothing is naked.
        await killed_bus.nc.close()
        interrupted = set(doomed.running)
        await eventually(lambda: _count(activation_store, ns, 60), deadline_s=30)
    assert interrupted, "the doomed invoker should have been running something"
    assert interrupted <= set(survivor.ran(ns)), "interrupted runs are redelivered to the survivor"
    records = await activation_store.list(ns, limit=200)
    assert sorted(r.activationId for r in records) == sorted(ids)


async def _fire(client: httpx.AsyncClient, name: str) -> str:
    r = await post(client, name)
    assert r.status_code == 202, r.text
    aid: str = r.json()["activationId"]
    return aid


async def _all_run(pools: list[FakePool], ns: str, n: int) -> bool:
    return sum(len(p.ran(ns)) for p in pools) >= n


async def _running(pool: FakePool) -> bool:
    return bool(pool.running)


async def _count(store: ActivationStore, ns: str, n: int) -> bool:
    return await store.count(ns) >= n


async def test_a_stopping_invoker_hands_back_what_it_cannot_finish(
    ns_client: httpx.AsyncClient, settings: Settings, bucket: str, recorder: ActivationRecorder,
    activation_store: ActivationStore,
) -> None:  # fmt: skip
    ns = ns_client.namespace  # type: ignore[attr-defined]
    await create(ns_client, "long", "sleep:1500")
    leaving, staying = FakePool("leaving"), FakePool("staying")
    async with agent(settings, staying, bucket, max_in_flight=1):
        async with agent(settings, leaving, bucket, drain_timeout_s=0.2):
            await eventually(lambda: _is_up(ns_client, bucket))
            # The staying invoker runs one at a time: of two invocations, the leaving one takes at least one.
            await _fire(ns_client, "long")
            await _fire(ns_client, "long")
            await eventually(lambda: _running(leaving))
            taken = set(leaving.running)
            stopped = time.monotonic()
        # Naked on the way out: the staying invoker runs it now, not after the 10 s ack wait.
        for aid in taken:
            await stored(activation_store, ns, aid)
        assert time.monotonic() - stopped < 6
        assert taken <= set(staying.ran(ns))


async def _is_up(client: httpx.AsyncClient, bucket: str) -> bool:
    return list((await client.get("/invokers")).json().values()) == ["up", "up"]


async def test_an_updated_action_runs_in_its_new_version_at_once(
    ns_client: httpx.AsyncClient, fake_pool: FakePool
) -> None:
    # The API and the invoker cache actions; the update itself must clear both before the next invoke.
    await create(ns_client, "v", "echo", parameters=[{"key": "v", "value": 0}])
    keys = set()
    for version in range(1, 8):
        body = {
            "exec": {"kind": "python:default", "code": "echo"},
            "parameters": [{"key": "v", "value": version}],
        }
        r = await ns_client.put("/api/v1/namespaces/_/actions/v", json=body, params={"overwrite": "true"})
        assert r.status_code == 200, r.text
        r = await post(ns_client, "v", blocking="true", result="true")
        assert r.json()["v"] == version
        keys.add(fake_pool.runs[-1].pool_key)
    assert len(keys) == 7  # a new revision never reuses the old version's containers
    r = await ns_client.delete("/api/v1/namespaces/_/actions/v")
    assert r.status_code == 200
    r = await post(ns_client, "v", blocking="true")
    assert r.status_code == 404


async def test_an_invoker_whose_pool_keeps_failing_turns_unhealthy_and_is_refused(
    ns_client: httpx.AsyncClient, client: httpx.AsyncClient, settings: Settings, bucket: str
) -> None:
    await create(ns_client, "boom", "explode")
    await create(ns_client, "echo", "echo")
    async with agent(settings, FakePool("failing"), bucket) as failing:
        for _ in range(4):
            r = await post(ns_client, "boom", blocking="true")
            assert r.status_code == 500
        assert failing.capacity == 1  # more than 3 of its last 10 were system errors

        async def unhealthy() -> bool:
            return (await client.get("/invokers")).json() == {"invoker0/0": "unhealthy"}

        await eventually(unhealthy)  # said in its next heartbeat
        r = await post(ns_client, "echo", blocking="true")
        assert r.status_code == 503 and r.json()["error"] == UNAVAILABLE
