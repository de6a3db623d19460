"""The rootless Podman API service: reuse the one that answers, or run one as the engine user for our lifetime."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from pathlib import Path
from types import TracebackType

import httpx

from broker.config import Settings
from broker.errors import Unavailable
from runtimes.images import (
    SETUP_HINT,
    PodmanUser,
    as_user_kwargs,
    pause_pid,
    podman_binary,
    resolve_podman_user,
    stop_new_pause,
)

PING_PATH = "/v4.0.0/libpod/_ping"


class PodmanService:
    """`async with PodmanService(settings) as podman:` then `PodmanClient(base_url=podman.base_url)`.

    A service started here runs in its own session (a terminal's Ctrl-C or hang-up does not reach it; we stop
    it), gets SIGTERM if this process dies, and is stopped on exit together with the pause process it created.
    """

    def __init__(
        self, settings: Settings, *, start_timeout_s: float = 15.0, stop_timeout_s: float = 5.0
    ) -> None:
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.user: PodmanUser | None = None
        self.socket_path = ""
        self.started_here = False
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stderr_reader: asyncio.Task[None] | None = None
        self._pause_before: int | None = None

    @property
    def base_url(self) -> str:
        """For podman-py: `PodmanClient(base_url=service.base_url)`."""
        return f"unix://{self.socket_path}"

    async def __aenter__(self) -> PodmanService:
        self.user = resolve_podman_user(self.settings.podman_user)
        self.socket_path = self.settings.podman_socket or f"{self.user.runtime_dir}/podman/podman.sock"
        if await self.ping():
            return self
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def ping(self) -> bool:
        """Whether the service answers. Each ping uses a fresh connection and closes it: the service's graceful
        shutdown waits for open connections."""
        if not self.socket_path or not _is_socket(self.socket_path):
            return False
        transport = httpx.AsyncHTTPTransport(uds=self.socket_path)
        try:
            async with httpx.AsyncClient(transport=transport, timeout=2.0) as client:
                response = await client.get(f"http://podman{PING_PATH}")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _start(self) -> None:
        assert self.user is not None
        binary = podman_binary()
        run_as = as_user_kwargs(self.user)
        self._prepare_dirs(self.user)
        _remove_stale_socket(self.socket_path)
        self._pause_before = pause_pid(self.user)
        # setpriv --pdeathsig: should this process die without stopping the service, the service stops too.
        # (Set after the uid change, which would clear it.) The uid change is setpriv's too, not subprocess's
        # user/group arguments, which uvloop's event loop does not take.
        switch: list[str] = []
        if "user" in run_as:
            uid, gid = run_as.pop("user"), run_as.pop("group")
            run_as.pop("extra_groups")
            switch = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        argv = [*switch, "setpriv", "--pdeathsig", "TERM", "--", binary, "system", "service", "--time=0"]
        process = await asyncio.create_subprocess_exec(
            *argv, f"unix://{self.socket_path}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, **run_as,
        )  # fmt: skip
        self._process, self.started_here = process, True
        self._stderr_reader = asyncio.create_task(self._read_stderr(process))
        deadline = time.monotonic() + self.start_timeout_s
        while not await self.ping():
            exited = process.returncode is not None
            if exited or time.monotonic() > deadline:
                await self.stop()
                why = "exited" if exited else "did not answer in time"
                tail = "; ".join(self._stderr_tail)
                raise Unavailable(f"{SETUP_HINT} (podman system service {why}: {tail or 'no output'})")
            await asyncio.sleep(0.02)

    def _prepare_dirs(self, user: PodmanUser) -> None:
        socket_dir = Path(self.socket_path).parent
        runtime_dir = Path(user.runtime_dir)
        if os.geteuid() == 0:
            # /run is a tmpfs: after a reboot the runtime dir is gone until someone recreates it.
            for path in (runtime_dir, socket_dir):
                if not path.is_dir():
                    path.mkdir(mode=0o700, parents=True)
                    os.chown(path, user.uid, user.gid)
        elif not runtime_dir.is_dir():
            raise Unavailable(f"{SETUP_HINT} (the runtime dir {runtime_dir} is missing)")
        else:
            socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def _read_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            self._stderr_tail.append(line.decode(errors="replace").strip())

    async def stop(self) -> None:
        """Stop the service if it was started here (its whole process group), and the pause process it made."""
        process, self._process = self._process, None
        if process is None:
            return
        # The podman process we started re-executes itself inside the user namespace and does not wait for that
        # child: signal and watch the whole group.
        pgid = process.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        # Polling: the service's inner process is not our child, so there is nothing to wait on.
        while _group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        await process.wait()
        if self._stderr_reader is not None:
            self._stderr_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_reader
        if self.user is not None:
            stop_new_pause(self.user, self._pause_before)


def _is_socket(path: str) -> bool:
    try:
        return Path(path).is_socket()
    except PermissionError:  # another user's runtime dir: the start that follows says what to do
        return False


def _remove_stale_socket(path: str) -> None:
    # Left by a killed service: nobody answers on it, and podman would refuse to bind.
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in the group; zombies count as gone, since an init that
    does not reap orphans keeps them forever."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
