"""The supervisor of role processes against the session's real NATS and MongoDB (no Podman: brokers and API
workers only): the API workers share its socket, a killed role comes back after its backoff, a role that cannot
start is one clear error, and nothing outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import httpx
import msgspec
import pytest

from api.server import bind
from broker.config import Settings
from broker.errors import Unavailable
from squall.supervisor import Supervisor

pytestmark = pytest.mark.slow


def role_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, invokers=0, feeds_workers=0, api_workers=2, brokers=1)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: its parent (this process's child watcher) has not reaped it yet.
    with contextlib.suppress(OSError):
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    return True


async def wait_for(probe: object, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out after {deadline_s} s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_roles_serve_on_the_shared_socket_come_back_when_killed_and_stop(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="squall.supervisor")
    with contextlib.closing(bind("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        ours = msgspec.structs.replace(role_settings(settings), api_port=port, drain_timeout_s=2)
        async with Supervisor(ours, listener, cores=2) as supervisor:
            await supervisor.start()
            pids = supervisor.pids()
            assert set(pids) == {"broker.1", "api.1", "api.2"}
            assert supervisor.counts == {"invoker": 0, "broker": 1, "feeds": 0, "api": 2}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                r = await client.get("/api/v1")
                assert r.status_code == 200 and r.json()["description"] == "OpenWhisk API"

                killed = pids["api.1"]
                assert killed is not None
                os.kill(killed, signal.SIGKILL)
            # The other worker keeps answering on the same socket meanwhile (new connections: one kept alive
            # may have been the killed worker's).
            fresh = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=fresh) as client:
                for _ in range(20):
                    assert (await client.get("/api/v1")).status_code == 200
                await wait_for(
                    lambda: (
                        supervisor.pids()["api.1"] not in (None, killed) and "api.1 is back" in caplog.text
                    ),
                    30,
                    "api.1 to come back",
                )
            assert f"api.1 (pid {killed}) ended after" in caplog.text
            assert "killed by SIGKILL): restarting it in 0.5 s" in caplog.text
            running = [pid for pid in supervisor.pids().values() if pid is not None]
        assert all(gone(pid) for pid in running), running


async def test_a_role_that_cannot_start_is_one_clear_error_and_leaves_nothing(settings: Settings) -> None:
    # Nothing listens on port 1: the role's backbone cannot connect, its process ends with status 1.
    broken = msgspec.structs.replace(role_settings(settings), nats_url="nats://127.0.0.1:1", api_workers=1)
    with contextlib.closing(bind("127.0.0.1", 0)) as listener:
        supervisor = Supervisor(broken, listener, cores=1)
        with pytest.raises(Unavailable, match=r"broker\.1 role process ended during start-up"):
            async with supervisor:
                await supervisor.start()
    assert all(gone(pid) for pid in supervisor.pids().values() if pid is not None)
