"""Shared live reading of activation streams against a real API server and nats-server: a resuming stream hands
over from its own catch-up reader to the namespace's shared reader with each record exactly once, one consumer
serves all of a namespace's streams, and a slow subscriber is cut off without costing the others anything."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import httpx
import pytest

from api.context import app_state
from broker import subjects
from broker.activation_store import ActivationStore
from broker.activations import APPLICATION_ERROR
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.entity_store import EntityStore
from tests.conditions import eventually
from tests.integration.conftest import basic
from tests.integration.test_activation_stream import (
    Serve,
    ids,
    opened,
    publish,
    readers,
    reading,
    record,
    serve,  # noqa: F401 (fixture)
    tenant,  # noqa: F401 (fixture)
)

BIG_LINE = "2026-01-01T00:00:00.000000000Z stdout: " + "z" * 4000


async def no_readers(bus: JetStreamBus, namespace: str) -> None:
    async def gone() -> bool:
        return not await readers(bus, namespace)

    await eventually(gone, 10, f"no consumer left for {namespace}")


@pytest.mark.parametrize("reader_running", [True, False], ids=["reader-running", "first-stream"])
async def test_a_stream_resuming_while_records_keep_arriving_gets_each_exactly_once(
    bus: JetStreamBus,
    activation_store: ActivationStore,
    serve: Serve,  # noqa: F811
    tenant: tuple[str, str],  # noqa: F811
    reader_running: bool,
) -> None:
    ns = tenant[0]
    before = [record(ns) for _ in range(200)]
    positions = await publish(bus, *before)
    during = [record(ns) for _ in range(300)]

    async def keep_publishing() -> None:
        for at in range(0, len(during), 10):
            await publish(bus, *during[at : at + 10])
            await asyncio.sleep(0.002)  # pacing: records keep arriving while the stream catches up

    # A window far smaller than the backlog: the stream's inbox also overflows while it catches up, so it hands
    # over more than once.
    async with serve(stream_window=16) as (server, client), contextlib.AsyncExitStack() as streams:
        hub = app_state(server.app).streams  # type: ignore[arg-type]
        live = None
        if reader_running:
            live = await streams.enter_async_context(opened(client))
            await reading(bus, ns)
        publisher = asyncio.create_task(keep_publishing())
        resumed = await streams.enter_async_context(opened(client, last_event_id=str(positions[49])))
        expected = [r.activationId for r in [*before[50:], *during]]
        got = await resumed.take(len(expected), deadline_s=20)
        await publisher
        assert ids(got) == expected  # every record after the position, in order, once
        assert [int(e[0] or 0) for e in got] == sorted({int(e[0] or 0) for e in got})
        # And the next event is the next new record, not a repeat of one sent during the hand-over.
        later = record(ns)
        await publish(bus, later)
        assert ids([await resumed.next()]) == [later.activationId]
        if live is not None:
            assert ids(await live.take(len(during) + 1)) == [r.activationId for r in [*during, later]]
        # Once caught up, the stream reads through the namespace's one shared consumer.
        await eventually(lambda: _count(bus, ns, 1), 10, "the catch-up consumers' removal")
        await streams.aclose()

        async def released() -> bool:
            return hub.open_streams(ns) == 0

        await eventually(released, 10, "the streams' release")
        assert hub.catch_ups >= 1
        assert 0 < hub.most_held <= 16
    await no_readers(bus, ns)


async def _count(bus: JetStreamBus, namespace: str, expected: int) -> bool:
    return len(await readers(bus, namespace)) == expected


async def test_fan_out_isolates_namespaces_filters_and_a_slow_subscriber(
    bus: JetStreamBus,
    store: EntityStore,
    serve: Serve,  # noqa: F811
    tenant: tuple[str, str],  # noqa: F811
) -> None:
    ns, key = tenant
    other_ns = f"{ns}-b"
    other_key = await create_namespace(store, other_ns)
    # 12 MB for ns: far more than the slow subscriber's socket buffers hold.
    mine = [
        record(
            ns,
            "a" if i % 3 else "b",
            status=APPLICATION_ERROR if i % 4 == 0 else "success",
            logs=[BIG_LINE] * 6,
        )
        for i in range(500)
    ]
    theirs = [record(other_ns, "a") for _ in range(100)]
    async with (
        serve(stream_stall_s=2.0, stream_window=16) as (server, client),
        httpx.AsyncClient(base_url=server.url, headers=basic(other_key), timeout=10.0) as other_client,
        opened(client) as everything,
        opened(client, "?name=a") as named,
        opened(client, "?status=failed") as failed,
        opened(other_client) as elsewhere,
    ):
        hub = app_state(server.app).streams  # type: ignore[arg-type]
        slow = await _slow_subscriber(server.port, key)
        try:
            await eventually(lambda: _opened(hub, ns, 4), 10, "the slow subscriber's stream")
            # One consumer per namespace, however many streams and filters it serves.
            assert len(await readers(bus, ns)) == 1
            assert len(await readers(bus, other_ns)) == 1
            interleaved = [r for pair in zip(mine[:100], theirs, strict=True) for r in pair] + mine[100:]
            await publish(bus, *interleaved)
            # The fast subscribers read at once (one read after the other would leave each waiting its turn
            # long enough to count as slow).
            wanted = {
                everything: [r.activationId for r in mine],
                named: [r.activationId for r in mine if r.name == "a"],
                failed: [r.activationId for r in mine if r.response.status != "success"],
                elsewhere: [r.activationId for r in theirs],
            }
            got = await asyncio.gather(*(stream.take(len(w)) for stream, w in wanted.items()))
            assert [ids(events) for events in got] == list(wanted.values())

            async def cut() -> bool:
                return hub.stalled >= 1

            await eventually(cut, 20, "the slow subscriber's cut-off")
            received = await _read_until_overflow(slow)
        finally:
            slow.close()
        text = received.decode(errors="replace")
        assert "event: overflow" in text, text[-300:]
        sent = [ln[4:] for ln in text.split("\n") if ln.startswith("id: ")]
        assert (
            0 < len(sent) - 1 < len(mine)
        )  # the last id is the overflow event's: the position to resume from
        # The others kept their streams: one more record reaches each of them, nothing else came meanwhile.
        last_mine, last_theirs = record(ns, "a", status=APPLICATION_ERROR), record(other_ns, "a")
        await publish(bus, last_mine, last_theirs)
        for stream in (everything, named, failed):
            assert ids([await stream.next()]) == [last_mine.activationId]
        assert ids([await elsewhere.next()]) == [last_theirs.activationId]
        assert hub.stalled == 1
        await eventually(lambda: _opened(hub, ns, 3), 10, "the slow subscriber's release")
        assert 0 < hub.most_held <= 16
    await no_readers(bus, ns)
    await no_readers(bus, other_ns)


async def _opened(hub: object, namespace: str, count: int) -> bool:
    return hub.open_streams(namespace) == count  # type: ignore[attr-defined,no-any-return]


async def _slow_subscriber(port: int, key: str) -> socket.socket:
    """A raw connection that asks for the stream and then reads nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    auth = basic(key)["Authorization"]
    request = (
        f"GET /api/v1/namespaces/_/activations/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    return sock


async def _read_until_overflow(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while b"event: overflow" not in received or not received.endswith(b"\r\n\r\n"):
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    break
                received += chunk
    return received


async def test_streams_go_on_with_no_gap_when_the_shared_consumer_disappears(
    bus: JetStreamBus,
    serve: Serve,  # noqa: F811
    tenant: tuple[str, str],  # noqa: F811
) -> None:
    ns = tenant[0]
    async with serve() as (_, client), opened(client) as one, opened(client, "?name=a") as two:
        await reading(bus, ns)
        first = [record(ns) for _ in range(5)]
        await publish(bus, *first)
        assert ids(await one.take(5)) == ids(await two.take(5)) == [r.activationId for r in first]
        # The consumer goes away under the streams (as the server's inactivity threshold would remove it).
        (name,) = await readers(bus, ns)
        await bus.js.delete_consumer(subjects.ACTIVATIONS_STREAM, name)
        second = [record(ns) for _ in range(5)]
        await publish(bus, *second)
        assert ids(await one.take(5, 15)) == ids(await two.take(5, 15)) == [r.activationId for r in second]
        await eventually(lambda: _count(bus, ns, 1), 10, "one shared consumer again")
    await no_readers(bus, ns)
