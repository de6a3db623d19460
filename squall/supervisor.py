"""Role processes of `squall standalone`: start them sized from the cores, restart one that dies, drain them all.

The API workers share one listening socket that the supervisor binds and hands down (as gunicorn and
`uvicorn --workers` do) rather than binding the port each with SO_REUSEPORT: a busy port is one clear error before
anything starts, port 0 works, and while a worker restarts its connections wait in the shared backlog for the
others instead of being refused or reset with the dead worker's own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable
from types import TracebackType

from broker.config import Settings
from broker.errors import Unavailable
from squall import role_process
from squall.embedded import die_with_parent

log = logging.getLogger("squall.supervisor")

# A role process that served this long before dying is restarted after the first delay again.
STABLE_S = 30.0
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 10.0
# A role must serve within this long of its start (an invoker builds its warm pool first).
READY_DEADLINE_S = 120.0
# Beyond a role's own drain deadline: the time to close its connections and exit.
EXIT_GRACE_S = 3.0
# Stop order: intake first (the API and feeds accept and make events), then those that carry them through.
STOP_WAVES = (("api", "feeds"), ("broker", "invoker"))
# Start order: the invoker first, so that the API never answers 503 "no invokers" during boot.
START_WAVES = (("invoker", "broker", "feeds"), ("api",))
# The role process's protocol with its supervisor: one line each way.
GO = role_process.GO
READY = role_process.READY


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def role_counts(settings: Settings, cores: int) -> dict[str, int]:
    """How many processes of each role: API workers one per core and brokers one per two cores unless set; the
    API's HTTP parsing and the brokers' rule matching and record batching are where a burst spends its CPU."""
    return {
        "invoker": settings.invokers,
        "broker": settings.brokers or max(1, cores // 2),
        "feeds": settings.feeds_workers,
        "api": settings.api_workers or max(1, cores),
    }


def restart_delay(failures: int) -> float:
    """The wait before restarting a role that died `failures` times in a row (each within STABLE_S of its
    start): doubling from RESTART_FIRST_S up to RESTART_MAX_S, so a role that cannot start does not spin."""
    return min(RESTART_MAX_S, RESTART_FIRST_S * 2.0 ** max(0, failures - 1))


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


class RoleProcess:
    """One role process slot: (re)started on demand, ready once it writes its line."""

    def __init__(self, role: str, name: str, env: dict[str, str], listener: socket.socket | None) -> None:
        self.role = role
        self.name = name
        self.env = env
        self.listener = listener
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        """Start the process and wait until it serves; Unavailable when it exits or hangs first."""
        await self.spawn()
        self.go()
        await self.ready()

    async def spawn(self) -> None:
        """Start the process. It prepares its role (imports, connections) but serves only once told to `go`."""
        argv = [sys.executable, "-m", "squall.role_process", self.role, self.name]
        fds: tuple[int, ...] = ()
        if self.listener is not None:
            fds = (self.listener.fileno(),)
            argv += ["--listen-fd", str(fds[0])]
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,  # `go`
            stdout=asyncio.subprocess.PIPE,  # the `ready` line; stderr (its logs) is ours
            pass_fds=fds,
            # Its own session: a terminal's Ctrl-C reaches the supervisor alone, which drains the roles in order;
            # and the kernel ends it if the supervisor is killed.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def go(self) -> None:
        """Let the process serve (its stdin's only line)."""
        if self.proc is not None and self.proc.stdin is not None and self.proc.returncode is None:
            self.proc.stdin.write(GO)

    async def ready(self) -> None:
        """Wait until the process serves; Unavailable when it ends or hangs first."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_DEADLINE_S)
        except TimeoutError:
            await self.kill()
            raise Unavailable(
                f"the {self.name} role process did not start in {READY_DEADLINE_S:.0f} s"
            ) from None
        if line != READY:
            if line:
                await self.kill()  # something else came first: not a role process we can trust to serve
            code = await proc.wait()  # without the line, its stdout closed: it is ending
            raise Unavailable(f"the {self.name} role process ended during start-up ({describe_exit(code)})")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # one still waiting for `go` stops at once
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()


class Supervisor:
    """`async with Supervisor(settings, listener) as roles: await roles.start()`: the role processes run, each
    restarted with backoff when it dies; on exit they are stopped in waves, each given its drain deadline before
    it is killed."""

    def __init__(self, settings: Settings, listener: socket.socket, cores: int | None = None) -> None:
        self.settings = settings
        self.listener = listener
        self.counts = role_counts(settings, cores or usable_cores())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
        env.update(settings.to_env())
        self.slots = [
            RoleProcess(role, f"{role}.{i}", env, listener if role == "api" else None)
            for role, count in self.counts.items()
            for i in range(1, count + 1)
        ]
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    def pids(self) -> dict[str, int | None]:
        return {slot.name: slot.pid for slot in self.slots}

    async def __aenter__(self) -> Supervisor:
        """Start every role process: each prepares its role (imports and connections take most of a start)
        while the caller finishes its own boot, and serves once `start` lets it."""
        try:
            await asyncio.gather(*(slot.spawn() for slot in self.slots))
        except BaseException:
            await self._stop(self.slots)
            raise
        return self

    async def start(self) -> None:
        """Let the roles serve, wave after wave, each once the one before serves; then keep them running."""
        for wave in START_WAVES:
            group = [slot for slot in self.slots if slot.role in wave]
            for slot in group:
                slot.go()
            await asyncio.gather(*(slot.ready() for slot in group))
        self._watchers = [
            asyncio.create_task(self._keep(slot), name=f"keep-{slot.name}") for slot in self.slots
        ]

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self._stop(self.slots)

    async def _keep(self, slot: RoleProcess) -> None:
        """Restart `slot` whenever it dies, until the supervisor stops."""
        failures = 0
        while True:
            assert slot.proc is not None
            code = await slot.proc.wait()
            if self._stopping:
                return
            ran = time.monotonic() - slot.started_at
            failures = 1 if ran >= STABLE_S else failures + 1
            delay = restart_delay(failures)
            log.warning(
                "%s (pid %s) ended after %.1f s (%s): restarting it in %.1f s",
                slot.name,
                slot.pid,
                ran,
                describe_exit(code),
                delay,
            )
            await asyncio.sleep(delay)
            try:
                await slot.start()
            except Unavailable as exc:
                log.warning("%s", exc.message)
                continue
            except OSError as exc:  # no process could be made (out of pids, of memory): try again later
                log.warning("cannot start %s: %s", slot.name, exc)
                continue
            log.warning("%s is back (pid %s)", slot.name, slot.pid)

    async def _stop(self, slots: Iterable[RoleProcess]) -> None:
        slots = list(slots)
        deadline_s = self.settings.drain_timeout_s + EXIT_GRACE_S
        for wave in STOP_WAVES:
            group = [slot for slot in slots if slot.role in wave and slot.proc is not None]
            for slot in group:
                slot.terminate()
            waits = [slot.proc.wait() for slot in group if slot.proc is not None]
            try:
                await asyncio.wait_for(asyncio.gather(*waits), deadline_s)
            except TimeoutError:
                late = [slot.name for slot in group if slot.proc is not None and slot.proc.returncode is None]
                log.warning("killing %s: not drained in %.0f s", ", ".join(late), deadline_s)
            for slot in group:
                await slot.kill()
