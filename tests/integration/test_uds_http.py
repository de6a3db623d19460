"""The Unix-socket HTTP client against small real servers: keep-alive, timeouts, garbage and dead peers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from runtimes.uds_http import NoReply, UdsConnection, connect_when_ready

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
COUNTS = {"connections": 0}


def alive(conn: UdsConnection) -> bool:
    return conn.alive


@contextlib.asynccontextmanager
async def serve(path: Path, handler: Handler) -> AsyncIterator[asyncio.Server]:
    server = await asyncio.start_unix_server(handler, path=str(path))
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head.split(b" ")[1], await reader.readexactly(length)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with its target and body, on one keep-alive connection; counts connections."""
    COUNTS["connections"] += 1
    while (request := await read_request(reader)) is not None:
        target, body = request
        payload = b'{"target":"%s","body":%s}' % (target, body or b"null")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()
    writer.close()


def answering_once(reply: bytes, *, then_wait_s: float = 0.0) -> Handler:
    """A peer that reads one request and writes `reply`, then hangs up (or, with `then_wait_s`, stays silent)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        if then_wait_s:
            await asyncio.sleep(then_wait_s)
        writer.close()

    return handler


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "proxy.sock"


async def test_many_requests_share_one_keep_alive_connection(sock: Path) -> None:
    COUNTS["connections"] = 0
    async with serve(sock, echo):
        conn = await UdsConnection.open(str(sock))
        for i in range(50):
            status, body = await conn.post("/run", b'{"i":%d}' % i, timeout_s=5)
            assert (status, body) == (200, b'{"target":"/run","body":{"i":%d}}' % i)
        assert alive(conn)
        await conn.close()
        assert not alive(conn)
    assert COUNTS["connections"] == 1


async def test_a_request_taken_along_is_answered_after_the_first_in_one_write(sock: Path) -> None:
    writes: list[bytes] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first chunk read holds both requests: they went out in one write.
        chunk = await reader.read(65536)
        writes.append(chunk)
        for request in chunk.split(b"POST ")[1:]:
            target = request.split(b" ", 1)[0]
            body = request.split(b"\r\n\r\n", 1)[1]
            payload = b'{"target":"%s","body":%s}' % (target, body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()
        await reader.read()  # until the client hangs up

    async with serve(sock, recording):
        conn = await UdsConnection.open(str(sock))
        first = await conn.post("/run", b'{"i":1}', timeout_s=5, then=("/logs", b"{}"))
        assert first == (200, b'{"target":"/run","body":{"i":1}}')
        with pytest.raises(NoReply, match="closed"):  # the second reply is read before anything else is sent
            await conn.post("/run", b"{}", timeout_s=5)
        conn.abort()
        conn = await UdsConnection.open(str(sock))
        await conn.post("/run", b'{"i":2}', timeout_s=5, then=("/logs", b"{}"))
        assert await conn.next_reply(timeout_s=5) == (200, b'{"target":"/logs","body":{}}')
        assert alive(conn)
        with pytest.raises(NoReply, match="closed"):  # nothing else was taken along
            await conn.next_reply(timeout_s=5)
        assert not alive(conn)
        conn.abort()
    assert [chunk.count(b"POST ") for chunk in writes] == [2, 2]


async def test_the_second_reply_of_a_closing_or_silent_peer_is_no_reply(sock: Path) -> None:
    silent_after_one = answering_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", then_wait_s=30)
    async with serve(sock, silent_after_one):
        conn = await UdsConnection.open(str(sock))
        assert await conn.post("/run", b"{}", timeout_s=5, then=("/logs", b"{}")) == (200, b"{}")
        with pytest.raises(TimeoutError):
            await conn.next_reply(timeout_s=0.2)
        assert not alive(conn)
        conn.abort()

    closing = answering_once(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n{}")
    async with serve(sock, closing):
        conn = await UdsConnection.open(str(sock))
        assert await conn.post("/run", b"{}", timeout_s=5, then=("/logs", b"{}")) == (400, b"{}")
        with pytest.raises(NoReply, match="closed"):
            await conn.next_reply(timeout_s=5)


async def test_a_large_body_goes_both_ways(sock: Path) -> None:
    big = b'"' + b"x" * 5_000_000 + b'"'
    async with serve(sock, echo):
        conn = await UdsConnection.open(str(sock))
        status, body = await conn.post("/run", big, timeout_s=10)
        assert status == 200 and len(body) == len(big) + len(b'{"target":"/run","body":}')
        await conn.close()


async def test_a_reply_too_large_is_no_reply(sock: Path) -> None:
    async with serve(sock, echo):
        conn = await UdsConnection.open(str(sock), max_body=100)
        with pytest.raises(NoReply, match="too large"):
            await conn.post("/run", b'"' + b"x" * 200 + b'"', timeout_s=5)
        assert not alive(conn)
        await conn.close()


async def test_a_slow_reply_times_out_and_breaks_the_connection(sock: Path) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serve(sock, slow):
        conn = await UdsConnection.open(str(sock))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await conn.post("/run", b"{}", timeout_s=0.2)
        assert 0.2 <= time.monotonic() - started < 2
        assert not alive(conn)
        with pytest.raises(NoReply, match="closed"):
            await conn.post("/run", b"{}", timeout_s=1)
        conn.abort()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"", "no reply"),
        (b"garbage\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", "no reply"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "transfer encoding"),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", "no Content-Length"),
    ],
    ids=["closed", "not http", "short body", "chunked", "no length"],
)
async def test_a_dead_or_garbled_peer_is_no_reply(sock: Path, reply: bytes, match: str) -> None:
    async with serve(sock, answering_once(reply)):
        conn = await UdsConnection.open(str(sock))
        with pytest.raises(NoReply, match=match):
            await conn.post("/run", b"{}", timeout_s=5)
        assert not alive(conn)
        await conn.close()


async def test_a_connection_close_reply_is_read_to_the_end(sock: Path) -> None:
    closing = answering_once(b'HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n{"error":"x"}')
    async with serve(sock, closing):
        conn = await UdsConnection.open(str(sock))
        assert await conn.post("/run", b"{}", timeout_s=5) == (502, b'{"error":"x"}')
        assert not alive(conn)


async def test_a_peer_that_hangs_up_while_idle_is_seen_as_dead(sock: Path) -> None:
    async with serve(sock, answering_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")):
        conn = await UdsConnection.open(str(sock))
        assert await conn.post("/run", b"{}", timeout_s=5) == (200, b"{}")
        deadline = time.monotonic() + 5
        while alive(conn) and time.monotonic() < deadline:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        assert not alive(conn)
        await conn.close()


async def test_connect_when_ready_waits_for_the_socket_then_times_out(sock: Path) -> None:
    loop = asyncio.get_running_loop()

    async def listen_later() -> None:
        await asyncio.sleep(0.1)
        server = await asyncio.start_unix_server(echo, path=str(sock))
        await asyncio.sleep(1)
        server.close()

    later = asyncio.create_task(listen_later())
    conn = await connect_when_ready(str(sock), loop.time() + 5)
    assert await conn.post("/x", b"1", timeout_s=5) == (200, b'{"target":"/x","body":1}')
    await conn.close()
    await later
    with pytest.raises(TimeoutError):
        await connect_when_ready(str(sock.with_name("never.sock")), loop.time() + 0.1)
