"""Live activation streams over SSE against a real API server, nats-server and MongoDB wire server: live records,
resuming with no gap and no duplicate (also across an API restart and from MongoDB), filters, the cap, slow
readers, disconnects and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest

from api.app import create_app
from api.context import app_state
from api.server import ApiServer
from broker import codec, large_records, subjects
from broker.activation_store import ActivationStore
from broker.activations import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    SUCCESS,
    Activation,
    make_response,
    new_activation_id,
)
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entities import KeyValue
from broker.entity_store import EntityStore
from broker.recorder import ActivationRecorder
from tests.conditions import eventually
from tests.integration.conftest import basic

Event = tuple[str | None, str, str]  # (id, event, data)


def record(
    namespace: str,
    name: str = "a",
    *,
    package: str | None = None,
    status: str = SUCCESS,
    trigger: bool = False,
    cause: str | None = None,
    start: int | None = None,
    logs: list[str] | None = None,
) -> Activation:
    now = int(time.time() * 1000) if start is None else start
    path = f"{namespace}/{package}/{name}" if package else f"{namespace}/{name}"
    annotations = (
        [] if trigger else [KeyValue(key="path", value=path), KeyValue(key="kind", value="python:3.11")]
    )
    return Activation(
        namespace=namespace,
        name=name,
        subject=namespace,
        activationId=new_activation_id(),
        start=now,
        end=0 if trigger else now + 1,
        duration=None if trigger else 1,
        cause=cause,
        response=make_response(status, {"ok": status == SUCCESS}),
        logs=logs or [],
        version="0.0.1",
        publish=False,
        annotations=annotations,
    )


def subject_of(r: Activation) -> str:
    path = next((p.value for p in r.annotations if p.key == "path"), None)
    name = path.split("/", 1)[1] if isinstance(path, str) else r.name
    return subjects.activation_subject(r.namespace, name)


async def publish(bus: JetStreamBus, *records: Activation) -> list[int]:
    """Publish as the invoker does (large records as stubs); returns their positions."""
    positions = []
    for r in records:
        message = await large_records.prepare(bus, r)
        ack = await bus.publish(
            subject_of(r), message.payload, msg_id=r.activationId, headers=message.headers
        )
        positions.append(ack.seq)
    return positions


class Stream:
    """An open SSE response and the events read from it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, deadline_s: float = 10.0) -> Event:
        async with asyncio.timeout(deadline_s):
            fields: dict[str, str] = {}
            async for line in self.lines:
                if not line:
                    if fields:
                        return fields.get("id"), fields.get("event", "message"), fields.get("data", "")
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                key, _, value = line.partition(": ")
                fields[key] = value
        raise EOFError("the stream ended")

    async def take(self, n: int, deadline_s: float = 10.0) -> list[Event]:
        return [await self.next(deadline_s) for _ in range(n)]

    async def ended(self, deadline_s: float = 10.0) -> bool:
        with contextlib.suppress(EOFError):
            await self.next(deadline_s)
            return False
        return True


def ids(events: list[Event]) -> list[str]:
    return [msgspec.json.decode(data)["activationId"] for _, _, data in events]


@pytest.fixture
async def tenant(store: EntityStore) -> tuple[str, str]:
    name = f"sse-{uuid.uuid4().hex[:10]}"
    return name, await create_namespace(store, name)


Serve = Callable[..., contextlib.AbstractAsyncContextManager[tuple[ApiServer, httpx.AsyncClient]]]


@pytest.fixture
def serve(
    settings: Settings, store: EntityStore, activation_store: ActivationStore, tenant: tuple[str, str]
) -> Serve:
    """`async with serve(**settings) as (server, client)`: an API process of its own on a free port."""

    @contextlib.asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[tuple[ApiServer, httpx.AsyncClient]]:
        app = create_app(msgspec.structs.replace(settings, **overrides), store, activation_store)
        async with ApiServer(app, "127.0.0.1", 0, drain_timeout_s=2) as server:
            try:
                async with httpx.AsyncClient(
                    base_url=server.url, headers=basic(tenant[1]), timeout=httpx.Timeout(10.0)
                ) as client:
                    yield server, client
            finally:
                app_state(app).streams.close()

    return running


@contextlib.asynccontextmanager
async def opened(
    client: httpx.AsyncClient, query: str = "", last_event_id: str | None = None
) -> AsyncIterator[Stream]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with client.stream("GET", f"/api/v1/namespaces/_/activations/stream{query}", headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Stream(r)


async def readers(bus: JetStreamBus, namespace: str) -> list[str]:
    """The stream readers' consumers on ACTIVATIONS for `namespace`."""
    infos = await bus.js.consumers_info(subjects.ACTIVATIONS_STREAM)
    prefix = subjects.activation_filter(namespace)[:-1]
    return [i.name for i in infos if (i.config.filter_subject or "").startswith(prefix)]


async def reading(bus: JetStreamBus, namespace: str, count: int = 1) -> None:
    async def ready() -> bool:
        return len(await readers(bus, namespace)) >= count

    await eventually(ready, 10, "the stream's consumer")


async def recorded(store: ActivationStore, namespace: str, count: int) -> None:
    async def done() -> bool:
        return await store.count(namespace) >= count

    await eventually(done, 15, f"{count} records in MongoDB")


async def test_live_records_and_resume_with_no_gap_or_duplicate_also_after_a_restart(
    bus: JetStreamBus,
    activation_store: ActivationStore,
    recorder: ActivationRecorder,
    serve: Serve,
    tenant: tuple[str, str],
) -> None:
    ns = tenant[0]
    first = [record(ns) for _ in range(3)]
    async with serve() as (_, client), opened(client) as live:
        await reading(bus, ns)
        positions = await publish(bus, *first)
        events = await live.take(3)
        assert ids(events) == [r.activationId for r in first]
        assert [e[0] for e in events] == [str(p) for p in positions]
        assert {e[1] for e in events} == {"activation"}
        # Each event is the record exactly as GET …/activations/{id} answers it.
        await recorded(activation_store, ns, 3)
        got = await client.get(f"/api/v1/namespaces/_/activations/{first[1].activationId}")
        assert msgspec.json.decode(events[1][2]) == got.json()
    # The client dropped; three more records came meanwhile. A new API process (a restart) resumes exactly.
    missed = [record(ns) for _ in range(3)]
    await publish(bus, *missed)
    async with serve() as (_, client), opened(client, last_event_id=events[0][0]) as resumed:
        again = await resumed.take(5)
        assert ids(again) == [r.activationId for r in [*first[1:], *missed]]
        later = record(ns)
        await publish(bus, later)
        assert ids([await resumed.next()]) == [later.activationId]


async def test_a_position_jetstream_no_longer_holds_is_served_from_mongodb_then_live(
    bus: JetStreamBus,
    activation_store: ActivationStore,
    recorder: ActivationRecorder,
    serve: Serve,
    tenant: tuple[str, str],
) -> None:
    ns = tenant[0]
    old = [record(ns) for _ in range(4)]
    positions = await publish(bus, *old)
    await recorded(activation_store, ns, 4)
    # JetStream drops everything up to the third record (as max_age would): positions 1 and 2 of ours are
    # only in MongoDB now, the fourth is still in both.
    await bus.js.purge_stream(subjects.ACTIVATIONS_STREAM, seq=positions[2] + 1)
    async with serve() as (_, client), opened(client, last_event_id=str(positions[0])) as resumed:
        events = await resumed.take(3)
        assert ids(events) == [r.activationId for r in old[1:]]
        assert [e[0] for e in events] == [str(p) for p in positions[1:]]
        new = record(ns)
        await publish(bus, new)
        assert ids([await resumed.next()]) == [new.activationId]


async def test_since_and_after(
    bus: JetStreamBus,
    activation_store: ActivationStore,
    recorder: ActivationRecorder,
    serve: Serve,
    tenant: tuple[str, str],
) -> None:
    ns = tenant[0]
    now = int(time.time() * 1000)
    records = [record(ns, start=now + i) for i in range(4)]
    await publish(bus, *records)
    await recorded(activation_store, ns, 4)
    async with serve() as (_, client):
        async with opened(client, f"?since={now + 2}") as since:
            assert ids(await since.take(2)) == [r.activationId for r in records[2:]]
        async with opened(client, f"?after={records[0].activationId}") as after:
            assert ids(await after.take(3)) == [r.activationId for r in records[1:]]
        r = await client.get(f"/api/v1/namespaces/_/activations/stream?after={new_activation_id()}")
        assert r.status_code == 404
        r = await client.get(
            f"/api/v1/namespaces/_/activations/stream?after={records[0].activationId}&since=1"
        )
        assert r.status_code == 400 and set(r.json()) == {"error", "code"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?name=a", ["plain"]),
        ("?name=pkg/a", ["packaged"]),
        ("?status=success", ["plain", "packaged", "fire", "caused"]),
        ("?status=failed", ["broken", "crashed"]),
        ("?status=application%20error", ["broken"]),
        ("?kind=trigger", ["fire"]),
        ("?kind=action", ["plain", "packaged", "broken", "crashed", "caused"]),
        ("?cause=FIRE", ["fire", "caused"]),
    ],
)
async def test_filters(
    bus: JetStreamBus, serve: Serve, tenant: tuple[str, str], query: str, expected: list[str]
) -> None:
    ns = tenant[0]
    fire = record(ns, "t", trigger=True)
    named = {
        "plain": record(ns, "a"),
        "packaged": record(ns, "a", package="pkg"),
        "broken": record(ns, "b", status=APPLICATION_ERROR),
        "crashed": record(ns, "b", status=DEVELOPER_ERROR),
        "fire": fire,
        "caused": record(ns, "c", cause=fire.activationId),
    }
    other = record(f"sse-other-{uuid.uuid4().hex[:6]}", "a")  # another namespace's: never shown
    async with serve() as (_, client), opened(client, query.replace("FIRE", fire.activationId)) as stream:
        await reading(bus, ns)
        await publish(bus, other, *named.values())
        events = await stream.take(len(expected))
        assert ids(events) == [named[n].activationId for n in expected]
        assert other.activationId not in ids(events)


async def test_bad_parameters_are_400_and_the_cap_is_429(serve: Serve, tenant: tuple[str, str]) -> None:
    async with serve(streams_per_namespace=2) as (server, client):
        for query in ("?status=maybe", "?kind=rule", "?cause=xyz", "?since=soon", "?name=a/b/c"):
            r = await client.get(f"/api/v1/namespaces/_/activations/stream{query}")
            assert r.status_code == 400 and set(r.json()) == {"error", "code"}, query
        r = await client.get("/api/v1/namespaces/_/activations/stream", headers={"Last-Event-ID": "-1"})
        assert r.status_code == 400
        async with opened(client), opened(client):
            r = await client.get("/api/v1/namespaces/_/activations/stream")
            assert r.status_code == 429
            assert "Too many open activation streams" in r.json()["error"] and "code" in r.json()
        # Both slots are free again once the server saw their clients leave.
        hub = app_state(server.app).streams  # type: ignore[arg-type]

        async def freed() -> bool:
            return hub.open_streams(tenant[0]) == 0

        await eventually(freed, 10, "the slots' release")
        async with opened(client), opened(client):
            pass


async def test_a_disconnect_removes_the_consumer_and_the_drain_ends_the_stream(
    bus: JetStreamBus, serve: Serve, tenant: tuple[str, str]
) -> None:
    ns = tenant[0]
    async with serve() as (server, client):
        async with opened(client):
            await reading(bus, ns)

        async def gone() -> bool:
            return not await readers(bus, ns)

        await eventually(gone, 10, "the consumer's removal")
        async with opened(client) as stream:
            await reading(bus, ns)
            app_state(server.app).streams.close()  # what the API role does when it drains  # type: ignore[arg-type]
            assert await stream.ended(5)
            assert any("shutting down" in c for c in stream.comments)
        await eventually(gone, 10, "the consumer's removal after the drain")


async def test_a_large_record_arrives_whole(bus: JetStreamBus, serve: Serve, tenant: tuple[str, str]) -> None:
    ns = tenant[0]
    line = "2026-01-01T00:00:00.000000000Z stdout: " + "x" * 1000
    big = record(ns, logs=[line] * 1500)  # 1.5 MB: more than one NATS message
    async with serve() as (_, client), opened(client) as stream:
        await reading(bus, ns)
        await publish(bus, big)
        ((_, _, data),) = await stream.take(1)
        assert msgspec.json.decode(data)["logs"] == big.logs


async def test_heartbeats_keep_an_idle_stream(serve: Serve) -> None:
    async with serve(stream_heartbeat_s=0.2) as (_, client), opened(client) as stream:
        with contextlib.suppress(TimeoutError):
            await stream.next(deadline_s=0.7)
        assert stream.comments and all(c == ": heartbeat" for c in stream.comments)


async def test_a_slow_reader_is_cut_off_with_its_position_and_resumes(
    bus: JetStreamBus, serve: Serve, tenant: tuple[str, str]
) -> None:
    ns, key = tenant
    line = "2026-01-01T00:00:00.000000000Z stdout: " + "y" * 4000
    burst = [record(ns, logs=[line] * 6) for _ in range(500)]  # 12 MB: far more than the sockets' buffers
    async with serve(stream_stall_s=0.5, stream_window=16) as (server, client):
        hub = app_state(server.app).streams  # type: ignore[arg-type]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        auth = basic(key)["Authorization"]
        request = f"GET /api/v1/namespaces/_/activations/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        await reading(bus, ns)
        await publish(bus, *burst)  # the client reads nothing meanwhile

        async def cut() -> bool:
            return hub.stalled >= 1

        await eventually(cut, 20, "the slow reader's cut-off")
        received = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while b"event: overflow" not in received or not received.endswith(b"\r\n\r\n"):
                    chunk = await loop.sock_recv(sock, 65536)
                    if not chunk:
                        break
                    received += chunk
        sock.close()
        text = received.decode(errors="replace")
        sent_ids = [ln[4:] for ln in text.split("\n") if ln.startswith("id: ")]
        assert "event: overflow" in text, text[-500:]
        assert 0 < len(sent_ids) < len(burst)
        # The overflow event repeats the last position delivered: resuming from it gives the rest, exactly.
        delivered = [int(i) for i in sent_ids[:-1]]
        assert int(sent_ids[-1]) == delivered[-1]
        async with opened(client, last_event_id=sent_ids[-1]) as resumed:
            rest = await resumed.take(len(burst) - len(delivered))
        assert len(delivered) + len(rest) == len(burst)
        assert ids(rest) == [r.activationId for r in burst[len(delivered) :]]
        assert hub.ended["slow"] == 1
        # What the server held for the slow client: at most its window of records, whatever the backlog.
        assert 0 < hub.most_held <= 16


def test_stream_payloads_are_the_codecs() -> None:
    # The stream sends stored payloads without decoding them; that is sound because every publisher encodes
    # records with the one codec, which is what GET …/activations/{id} answers with.
    r = record("ns")
    assert codec.encode(codec.decode(codec.encode(r), Activation)) == codec.encode(r)
