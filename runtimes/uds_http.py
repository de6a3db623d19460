"""A minimal HTTP/1.1 client over a Unix socket: one keep-alive connection per container, JSON POSTs, fast."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from broker.errors import InternalError

# Replies larger than this are not read: a container claiming more is treated as giving no valid reply.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
_HEADER_LIMIT = 64 * 1024
_T = TypeVar("_T")


class NoReply(InternalError):
    """The container gave no (valid) HTTP reply: it closed the connection, crashed, or sent garbage."""

    default_message = "The container gave no reply."


class UdsConnection:
    """One HTTP/1.1 keep-alive connection to a proxy's Unix socket. One request at a time, except that a
    request may take a second one along (`post(…, then=…)`, HTTP/1.1 pipelining): the proxy answers it after
    the first, and its reply is read with `next_reply` before anything else is sent.

    A timeout or any protocol error leaves the connection broken (`alive` is False): the caller destroys the
    container, since a reply could still arrive and would answer the wrong request.
    """

    def __init__(
        self, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._max_body = max_body
        self._broken = False
        self._unanswered = False  # a pipelined request's reply is still to be read
        self._head = b"Host: squall\r\nContent-Type: application/json\r\nContent-Length: "

    @classmethod
    async def open(cls, path: str, *, max_body: int = DEFAULT_MAX_BODY) -> UdsConnection:
        """Connect; raises OSError (FileNotFoundError, ConnectionRefusedError, ...) when nobody listens yet."""
        reader, writer = await asyncio.open_unix_connection(path, limit=_HEADER_LIMIT)
        return cls(path, reader, writer, max_body)

    @property
    def alive(self) -> bool:
        """False once broken, or when the peer has closed its end (e.g. the container died while idle)."""
        return not (self._broken or self._reader.at_eof() or self._writer.is_closing())

    async def post(
        self,
        target: str,
        body: bytes,
        timeout_s: float | None = None,
        *,
        then: tuple[str, bytes] | None = None,
    ) -> tuple[int, bytes]:
        """POST `body` (JSON) to `target`; the reply's status and body. TimeoutError after `timeout_s`,
        NoReply when the connection fails or the reply is not valid HTTP. `then` (target, body) is sent in the
        same write and answered after this one: its reply is `next_reply`'s (one round trip saved)."""
        if not self.alive or self._unanswered:
            raise NoReply("The connection to the container is closed.")
        parts = self._request(target, body)
        if then is not None:
            parts += self._request(*then)
            self._unanswered = True
        return await self._guarded(self._exchange(parts), timeout_s)

    async def next_reply(self, timeout_s: float | None = None) -> tuple[int, bytes]:
        """The reply to the request that the last `post` took along (`then`); errors as `post`'s."""
        if not self._unanswered or not self.alive:
            self._broken = True
            raise NoReply("The connection to the container is closed.")
        self._unanswered = False
        return await self._guarded(self._reply(), timeout_s)

    async def _guarded(self, exchange: Awaitable[_T], timeout_s: float | None) -> _T:
        """Any failure leaves the connection broken: TimeoutError as is, the rest as NoReply."""
        try:
            async with asyncio.timeout(timeout_s):
                return await exchange
        except TimeoutError:
            self._broken = True
            raise
        except NoReply:
            self._broken = True
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._broken = True
            raise NoReply(f"The container gave no reply ({type(exc).__name__}: {exc}).") from None

    def _request(self, target: str, body: bytes) -> list[bytes]:
        head = b"POST %s HTTP/1.1\r\n%s%d\r\n\r\n" % (target.encode(), self._head, len(body))
        return [head + body] if len(body) <= 65536 else [head, body]

    async def _exchange(self, parts: list[bytes]) -> tuple[int, bytes]:
        # One write, one send(2) for the usual small bodies (a pipelined pair too); no drain() then: the socket
        # buffer takes it at once, and a drain costs a turn of the loop. Large bodies are not copied.
        if len(parts) == 1 or sum(map(len, parts)) <= 65536:
            self._writer.write(b"".join(parts))
        else:
            self._writer.writelines(parts)
            await self._writer.drain()
        return await self._reply()

    async def _reply(self) -> tuple[int, bytes]:
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length, close = _parse_head(head)
        if length is None:
            if not close:
                raise NoReply("The container's reply has no Content-Length.")
            payload = await self._read_to_eof()
        else:
            if length > self._max_body:
                raise NoReply(f"The container's reply is too large ({length} bytes).")
            payload = await self._reader.readexactly(length)
        if close:
            self._broken = True
            self._writer.close()
        return status, payload

    async def _read_to_eof(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await self._reader.read(65536):
            size += len(chunk)
            if size > self._max_body:
                raise NoReply(f"The container's reply is too large (over {self._max_body} bytes).")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        self._broken = True
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection at once (no await): for a container being killed."""
        self._broken = True
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()


def _parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """(status, Content-Length or None, whether the server closes the connection) of a reply head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise NoReply(f"The container's reply is not HTTP: {lines[0][:80]!r}.")
    status = int(parts[1])
    length: int | None = None
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
            if length < 0:
                raise NoReply("The container's reply has a negative Content-Length.")
        elif name == b"transfer-encoding":
            raise NoReply("The container's reply uses a transfer encoding, which the pool does not read.")
        elif name == b"connection":
            token = value.strip().lower()
            close = token == b"close" or (close and token != b"keep-alive")
    return status, length, close


async def connect_when_ready(
    path: str, deadline: float, *, max_body: int = DEFAULT_MAX_BODY
) -> UdsConnection:
    """Connect to a proxy that is starting: retry while its socket is missing or not listening, until the
    loop-time `deadline` (then TimeoutError). The socket appearing is the proxy's signal that it is ready."""
    loop = asyncio.get_running_loop()
    delay = 0.001
    while True:
        try:
            return await UdsConnection.open(path, max_body=max_body)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if loop.time() >= deadline:
            raise TimeoutError(f"no proxy listening on {path}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.01)
