"""A Server-Sent Events response that sends a stream of positioned events with heartbeats, and ends it cleanly
when the client leaves, stalls, or the server drains.

Written for this API rather than taken from sse-starlette: a slow client must be cut off with the position it can
resume from (a final event it receives if it reads again), which needs control over each send's deadline, and
the server's drain must end streams through the API's own signal (StreamHub.closing), not a process-wide hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

from starlette.types import Receive, Scope, Send

from broker import codec
from broker.errors import SquallError

log = logging.getLogger("squall.sse")

MEDIA_TYPE: Final = "text/event-stream"
HEARTBEAT: Final = b": heartbeat\n\n"
# How long a closing frame (a cut-off notice, the end of the body) may wait for a client that does not read.
CLOSING_SEND_S: Final = 1.0

Positioned = tuple[int, bytes]  # (position, the event's data: one line of JSON)


def frame(event: str, data: bytes, position: int | None = None) -> bytes:
    """One SSE event; `data` must hold no newline (compact JSON never does)."""
    head = b"" if position is None else b"id: %d\n" % position
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class EventStream:
    """An ASGI response: `events` yields (position, data) pairs, sent as `event: <name>` with `id: <position>`.

        It ends when `events` ends, the client disconnects, `closing` is set (a final comment says so), a send
        waits more than `stall_s` for the client (a final `event: overflow` names the last position delivered), or
        `events` fails (a final `event: error`). `on_stall()` runs when a client is found too slow, `on_end(reason)` once
    the stream is over, whatever happened.
    """

    def __init__(
        self,
        events: AsyncIterator[Positioned],
        *,
        event: str,
        heartbeat_s: float,
        stall_s: float,
        closing: asyncio.Event,
        on_end: Callable[[str], None],
        on_stall: Callable[[], None] = lambda: None,
        start_position: int | None = None,
    ) -> None:
        self.events = events
        self.event = event
        self.heartbeat_s = heartbeat_s
        self.stall_s = stall_s
        self.closing = closing
        self.on_end = on_end
        self.on_stall = on_stall
        self.delivered = start_position  # the last position the client was sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = "ended"
        try:
            headers = [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            reason = await self._pump(receive, send)
            if reason != "disconnected":
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(send({"type": "http.response.body", "body": b""}), CLOSING_SEND_S)
        finally:
            with contextlib.suppress(Exception):
                await self.events.aclose()  # type: ignore[attr-defined]
            self.on_end(reason)

    async def _pump(self, receive: Receive, send: Send) -> str:
        left = asyncio.create_task(_disconnected(receive))
        closing = asyncio.create_task(self.closing.wait())
        pending: asyncio.Task[Positioned] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.create_task(anext(self.events))  # type: ignore[arg-type]
                done, _ = await asyncio.wait(
                    {pending, left, closing}, timeout=self.heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if left in done:
                    return "disconnected"
                if closing in done:
                    await self._last(send, self._resume_comment("the server is shutting down"))
                    return "shutdown"
                if pending not in done:
                    if not await self._send(send, HEARTBEAT):
                        return await self._cut(send)
                    continue
                taken, pending = pending, None
                try:
                    position, data = taken.result()
                except StopAsyncIteration:
                    return "ended"
                except SquallError as exc:
                    log.warning("activation stream failed: %s", exc.message)
                    body = codec.encode({"error": exc.message})
                    await self._last(send, frame("error", body, self.delivered))
                    return "failed"
                if not await self._send(send, frame(self.event, data, position)):
                    return await self._cut(send)
                self.delivered = position
        finally:
            for waiting in (left, closing, pending):
                if waiting is not None and not waiting.done():
                    waiting.cancel()
                    with contextlib.suppress(BaseException):
                        await waiting

    async def _send(self, send: Send, body: bytes) -> bool:
        """Send within the stall deadline; False when the client did not take it in time (nothing was written:
        the server waits for room before writing)."""
        try:
            await asyncio.wait_for(
                send({"type": "http.response.body", "body": body, "more_body": True}), self.stall_s
            )
        except TimeoutError:
            return False
        return True

    async def _cut(self, send: Send) -> str:
        self.on_stall()
        resume = {"error": "The client read too slowly; resume from the last event id.", "lastEventId": None}
        if self.delivered is not None:
            resume["lastEventId"] = str(self.delivered)
        # A client that reads again soon gets what was sent, then this; the wait is bounded like a record's.
        await self._last(send, frame("overflow", codec.encode(resume), self.delivered), 2 * self.stall_s)
        return "slow"

    def _resume_comment(self, why: str) -> bytes:
        if self.delivered is None:
            return f": {why}; reconnect to resume\n\n".encode()
        return f": {why}; reconnect with Last-Event-ID {self.delivered} to resume\n\n".encode()

    async def _last(self, send: Send, body: bytes, timeout_s: float = CLOSING_SEND_S) -> None:
        """A closing frame: sent if the client takes it soon, else dropped (the connection ends anyway)."""
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(
                send({"type": "http.response.body", "body": body, "more_body": True}), timeout_s
            )


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
