"""Serve the API with uvicorn inside the caller's event loop, as an async context manager."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from broker.errors import Unavailable


class _Server(uvicorn.Server):
    # Signals belong to the CLI (DESIGN § Conventions 5); uvicorn must not install its own handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front so a busy port is one clear line, not a uvicorn traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only for sockets that say they are TCP; without that
    # every small response waits for the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(
                f"port {port} on {host} is already in use (choose another with --api-port)"
            ) from None
        raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ApiServer:
    """Runs uvicorn on a pre-bound socket; exiting stops intake and lets in-flight requests finish.

    `sock`: a listening socket bound elsewhere (a supervisor's, shared by its API worker processes) to serve
    instead of binding `host:port` here."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        drain_timeout_s: float = 5.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self._sock = sock
        self.host = host
        self.port = port
        self.drain_timeout_s = drain_timeout_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        sock = self._sock or bind(self.host, self.port)
        self.port = sock.getsockname()[1]  # port 0 asks the kernel for a free one
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(self.drain_timeout_s),
            server_header=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="api-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # surfaces the startup failure
                raise Unavailable(f"the API server on {self.url} stopped during start-up")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, self.drain_timeout_s + 1)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
