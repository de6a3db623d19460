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
from collections.abc import Callable
from typing import Final, Protocol

from starlette.types import Receive, Scope, Send

from broker import codec
from broker.errors import SquallError

log = logging.getLogger("squall.sse")

MEDIA_TYPE: Final = "text/event-stream"
HEARTBEAT: Final = b": heartbeat\n\n"
# How long a closing frame (a cut-off notice, the end of the body) may wait for a client that does not read.
CLOSING_SEND_S: Final = 1.0

Positioned = tuple[int, bytes]  # (position, the event as sent: `frame(...)`)


class Source(Protocol):
    """Where a stream's events come from: `take()` gives what is ready (in order), and the source calls the
    function given to `watch` whenever it may have more; `aclose()` once the stream is over."""

    def watch(self, notify: Callable[[], None]) -> None: ...

    def take(self) -> list[Positioned]: ...

    async def aclose(self) -> None: ...


def frame(event: str, data: bytes, position: int | None = None) -> bytes:
    """One SSE event; `data` must hold no newline (compact JSON never does)."""
    head = b"" if position is None else b"id: %d\n" % position
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class EventStream:
    """An ASGI response sending the events of `source`, each already framed with its `id: <position>`; whatever is
    ready at once goes in one write, so a client that fell behind costs one send per batch, not per event.

    It ends when the client disconnects, `closing` is set (a final comment says so), a send waits more than
    `stall_s` for the client (a final `event: overflow` names the last position delivered), or the source fails
    (a final `event: error`). A heartbeat comment goes out at each `heartbeat_s` tick with nothing sent since the
    last one. `on_stall()` runs when a client is found too slow, `on_end(reason)` once the stream is over,
    whatever happened.
    """

    def __init__(
        self,
        source: Source,
        *,
        heartbeat_s: float,
        stall_s: float,
        closing: asyncio.Event,
        on_end: Callable[[str], None],
        on_stall: Callable[[], None] = lambda: None,
        start_position: int | None = None,
    ) -> None:
        self.source = source
        self.heartbeat_s = heartbeat_s
        self.stall_s = stall_s
        self.closing = closing
        self.on_end = on_end
        self.on_stall = on_stall
        self.delivered = start_position  # the last position the client was sent
        self._wakeup: asyncio.Future[None] | None = None
        self._ticked = False

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
                await self.source.aclose()
            self.on_end(reason)

    def _notify(self, *_: object) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _tick(self) -> None:
        self._ticked = True
        self._notify()

    async def _pump(self, receive: Receive, send: Send) -> str:
        loop = asyncio.get_running_loop()
        left = asyncio.create_task(_disconnected(receive))
        closing = asyncio.create_task(self.closing.wait())
        left.add_done_callback(self._notify)
        closing.add_done_callback(self._notify)
        self.source.watch(self._notify)
        ticker = _Ticker(loop, self.heartbeat_s, self._tick)
        quiet = True  # nothing sent since the last tick
        try:
            while True:
                if left.done():
                    return "disconnected"
                if closing.done():
                    await self._last(send, self._resume_comment("the server is shutting down"))
                    return "shutdown"
                try:
                    batch = self.source.take()
                except SquallError as exc:
                    log.warning("activation stream failed: %s", exc.message)
                    body = codec.encode({"error": exc.message})
                    await self._last(send, frame("error", body, self.delivered))
                    return "failed"
                if batch:
                    body = batch[0][1] if len(batch) == 1 else b"".join(event for _, event in batch)
                    if not await self._send(send, body):
                        return await self._cut(send)
                    self.delivered, quiet = batch[-1][0], False
                    continue
                if self._ticked:
                    self._ticked = False
                    if quiet and not await self._send(send, HEARTBEAT):
                        return await self._cut(send)
                    quiet = True
                    continue
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
        finally:
            ticker.cancel()
            for waiting in (left, closing):
                if not waiting.done():
                    waiting.cancel()
                    with contextlib.suppress(BaseException):
                        await waiting

    async def _send(self, send: Send, body: bytes) -> bool:
        """Send within the stall deadline; False when the client did not take it in time (nothing was written:
        the server waits for room before writing)."""
        try:
            async with asyncio.timeout(self.stall_s):  # no task per send, unlike wait_for
                await send({"type": "http.response.body", "body": body, "more_body": True})
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


class _Ticker:
    """Calls `tick` every `interval_s` until cancelled: one timer per stream, not one per event."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float, tick: Callable[[], None]) -> None:
        self.loop, self.interval_s, self.tick = loop, interval_s, tick
        self._handle = loop.call_later(interval_s, self._fire)

    def _fire(self) -> None:
        self._handle = self.loop.call_later(self.interval_s, self._fire)
        self.tick()

    def cancel(self) -> None:
        self._handle.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
