"""The warm container pool: runs one action at a time per container, reuses, prewarms, queues, reaps, replaces."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Final

import msgspec

from broker import metrics
from broker.clock import now_ms
from broker.config import Settings
from broker.errors import BadRequest, SquallError, Unavailable
from broker.kinds import image_family, runtime_of
from runtimes.artefact_cache import ArtefactCache, artefact_key, owner_of
from runtimes.contract import RunOutcome, RunRequest
from runtimes.images import offered_families
from runtimes.podman_backend import Container, PodmanBackend, Sandbox
from runtimes.pool_policy import (
    Create,
    Refuse,
    Reuse,
    Slot,
    Want,
    choose,
    keep_after_run,
    parse_prewarm,
    pick_uid,
    plan_stems,
    reap_interval,
    reapable,
    used_mb,
)
from runtimes.uds_http import NoReply, UdsConnection

log = logging.getLogger(__name__)

LOG_LIMIT_ENV = "SQUALL_LOG_LIMIT_BYTES"  # the proxy reads the log limit from the /init env
# The proxy's POST /logs: the lines since the last one (proxy contract).
LOGS_REQUEST: Final = ("/logs", b"{}")
SIDE_DOOR = ".logs"  # the proxy's second socket, answering /logs while the action runs (proxy contract)


class PoolSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The pool's configuration; `from_settings` takes the `pool_*` fields of broker.config.Settings."""

    memory_mb: int = 2048  # capacity: the sum of the memory limits of all containers, stem cells included
    prewarm: str = "python:1,nodejs:1"  # stem cells per runtime family
    prewarm_memory_mb: int = 256  # a stem cell serves only actions with this memory limit
    idle_timeout_s: float = 600.0  # a warm container idle this long is removed
    pause_grace_s: float = 10.0  # a warm container idle this long is paused, where the host can (0: never)
    ready_timeout_s: float = 10.0  # container start until its proxy listens
    logs_timeout_s: float = 5.0  # POST /logs after a run
    drain_timeout_s: float = 5.0  # on exit: how long in-flight runs may take to finish
    stem_retry_s: float = 5.0  # after a stem cell failed to start
    tmpfs_mb: int = 64
    nofile: int = 1024
    nproc: int = 512
    max_reply_mb: int = 64  # a larger /run reply counts as no reply

    def sandbox(self) -> Sandbox:
        return Sandbox(
            tmpfs_mb=self.tmpfs_mb, nofile=self.nofile, nproc=self.nproc, cpu_total_mb=self.memory_mb
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolSettings:
        """The operator-facing knobs come from the settings object; the rest keep their defaults."""
        return cls(
            memory_mb=settings.pool_memory_mb,
            prewarm=settings.pool_prewarm,
            idle_timeout_s=settings.pool_idle_timeout_s,
            pause_grace_s=settings.pool_pause_grace_s,
            drain_timeout_s=settings.drain_timeout_s,
        )


class PoolStats(msgspec.Struct, frozen=True, kw_only=True):
    """For invoker heartbeats."""

    capacity_mb: int
    used_mb: int
    free_mb: int
    containers: int
    warm: int  # initialized with an action, idle
    stem: int  # prewarmed stem cells, idle
    busy: int
    queued: int
    paused: int = 0  # idle and frozen
    families: tuple[str, ...] = ()  # the runtime families this pool runs


class _Entry:
    """One container of the pool, from the moment its memory is reserved."""

    __slots__ = (
        "busy", "conn", "container", "family", "id", "initialized", "key", "last_used", "memory_mb", "network",
        "paused", "pausing", "uid",
    )  # fmt: skip

    def __init__(self, id: str, family: str, memory_mb: int, uid: int, network: bool) -> None:
        self.id = id
        self.family = family
        self.memory_mb = memory_mb
        self.uid = uid
        self.network = network
        self.key: str | None = None  # the action it belongs to, from the moment a run claims it
        self.initialized = False  # its /init succeeded
        self.busy = True
        self.last_used = time.monotonic()
        self.container: Container | None = None
        self.conn: UdsConnection | None = None
        self.paused = False  # frozen while idle; thawed before its next run
        self.pausing: asyncio.Task[None] | None = None  # waits out the grace period, then pauses

    def slot(self) -> Slot:
        return Slot(
            id=self.id, family=self.family, memory_mb=self.memory_mb, key=self.key, busy=self.busy,
            last_used=self.last_used, network=self.network,
        )  # fmt: skip


class _Failed(Exception):
    """A run ended early; the outcome says how."""

    def __init__(self, outcome: RunOutcome) -> None:
        self.outcome = outcome


class ContainerPool:
    """`async with ContainerPool(settings, pool_id) as pool: outcome = await pool.run(request)`.

    `pool_id` labels the pool's containers and must be unique among the live pools of the host (default: one per
    process).
    `run` raises a broker error only when the platform could not prepare a container (engine down, image
    missing, egress refused, shutting down); whatever the action does is reported in the outcome.
    """

    def __init__(
        self,
        settings: Settings,
        pool_id: str | None = None,
        config: PoolSettings | None = None,
    ) -> None:
        pool_id = pool_id or f"pool-{os.getpid()}"
        self.config = config or PoolSettings.from_settings(settings)
        self.prewarm = parse_prewarm(self.config.prewarm)
        self._metrics = metrics.current()
        self.backend = PodmanBackend(settings, pool_id, self.config.sandbox())
        self.artefacts = ArtefactCache.from_settings(settings)
        self._settings = settings
        self.families: tuple[str, ...] = ()  # known once entered: those of SQUALL_RUNTIMES with an image
        self._entries: dict[str, _Entry] = {}
        self._queue: collections.deque[tuple[Want, asyncio.Future[_Entry]]] = collections.deque()
        self._ids = itertools.count(1)
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._deciding = False
        self._replenishing: asyncio.Task[None] | None = None
        self._stem_failed_at = -1e9
        self._reaper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ContainerPool:
        await self.backend.__aenter__()
        try:
            self.families = await self.backend.available_families(offered_families(self._settings))
        except BaseException:
            await self.backend.__aexit__(None, None, None)
            raise
        self._reaper = asyncio.create_task(self._reap_loop(), name="pool-reaper")
        self._replenish_soon()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        while self._queue:
            _, waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(Unavailable("The container pool is shutting down."))
        try:
            runs = self._runs - {asyncio.current_task()}
            if runs:
                _, pending = await asyncio.wait(runs, timeout=self.config.drain_timeout_s)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=self.config.drain_timeout_s)
            background = [t for t in (self._reaper, self._replenishing) if t is not None]
            for task in background:
                task.cancel()
            # A stem cell being started cleans up after itself when cancelled: let it, before the final sweep.
            await asyncio.gather(*background, return_exceptions=True)
            for entry in list(self._entries.values()):
                self._discard(entry)
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            await self.backend.__aexit__(exc_type, exc, tb)

    # --- running --------------------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> RunOutcome:
        """Run one activation: in a warm container of its pool key, else a stem cell, else a new container."""
        if self._closing:
            raise Unavailable("The container pool is shutting down.")
        family = image_family(request.kind)
        if request.network and not self.backend.features.egress:
            raise BadRequest(
                "Network egress was requested, but this host cannot provide it: "
                f"{self.backend.features.egress_problem}."
            )
        want = Want(key=request.pool_key, family=family, memory_mb=request.memory_mb, network=request.network)
        task = asyncio.current_task()
        assert task is not None
        self._runs.add(task)
        try:
            queued = time.monotonic()
            entry = await self._acquire(want)
            wait_ms = int((time.monotonic() - queued) * 1000)
            try:
                outcome = await self._run_in(entry, request, wait_ms)
            except _Failed as failed:
                outcome = await self._last_logs(entry, failed.outcome)
                self._discard(entry)
                return outcome
            except BaseException:
                self._discard(entry)
                raise
            if keep_after_run(outcome.status, outcome.body) and entry.conn is not None and entry.conn.alive:
                entry.busy = False
                entry.last_used = time.monotonic()
                self._pause_later(entry)
                self._pump()
                if outcome.cold:
                    self._replenish_soon()
            else:
                self._discard(entry)
            return outcome
        finally:
            self._runs.discard(task)

    async def _run_in(self, entry: _Entry, request: RunRequest, wait_ms: int) -> RunOutcome:
        timeout_s = request.timeout_ms / 1000
        taken = time.monotonic()
        await self._wake(entry)
        fresh = entry.container is None
        if fresh:
            await self._start(entry)
        conn = entry.conn
        assert conn is not None and entry.container is not None
        cold = not entry.initialized
        how = "cold" if fresh else "prewarm" if cold else "warm"
        base: dict[str, Any] = {"wait_ms": wait_ms, "container": entry.container.id, "cold": cold}
        start = now_ms()
        artefact_to_keep = ""
        if cold:
            env = {**request.init.env, LOG_LIMIT_ENV: str(request.log_limit_bytes)}
            value = msgspec.structs.replace(request.init, env=env)
            body = b'{"value":%s}' % msgspec.json.encode(value)
            key = self._artefact_key(request)
            if key:
                artefact = await asyncio.to_thread(self.artefacts.get, key)
                if artefact is not None:
                    value_with = {
                        **msgspec.to_builtins(value),
                        "artefact": base64.b64encode(artefact).decode(),
                    }
                    body = msgspec.json.encode({"value": value_with})
                else:
                    artefact_to_keep = key
            status, reply = await self._post(
                conn, "/init", body, timeout_s=timeout_s, start=start, base=base, init=True
            )
            init_ms = now_ms() - start
            if status != 200:
                logs, truncated = await self._logs(conn)
                raise _Failed(
                    RunOutcome(
                        start=start,
                        end=now_ms(),
                        init_ms=init_ms,
                        init_status=status,
                        init_body=reply,
                        logs=logs,
                        logs_truncated=truncated,
                        **base,
                    )
                )
            entry.initialized = True
            base["init_ms"] = init_ms
        self._metrics.container_starts(how).inc()
        self._metrics.container_start_seconds(how).observe(time.monotonic() - taken)
        run_start = now_ms()
        # The run's logs are asked for in the same write (pipelined): the proxy answers /logs after /run, and
        # the container is spared a round trip per run. A run that fails takes the side door instead.
        status, reply = await self._post(
            conn,
            "/run",
            msgspec.json.encode(request.run),
            timeout_s=timeout_s,
            start=start,
            base=base,
            init=False,
            then=LOGS_REQUEST,
        )
        end = now_ms()
        logs, truncated = await self._logs(conn, asked=True)
        if artefact_to_keep:
            await self._keep_artefact(conn, artefact_to_keep)
        return RunOutcome(
            start=start if cold else run_start, end=end, status=status, body=reply, logs=logs,
            logs_truncated=truncated, **base,
        )  # fmt: skip

    async def _post(
        self,
        conn: UdsConnection,
        target: str,
        body: bytes,
        *,
        timeout_s: float,
        start: int,
        base: dict[str, Any],
        init: bool,
        then: tuple[str, bytes] | None = None,
    ) -> tuple[int, bytes]:
        try:
            return await conn.post(target, body, timeout_s, then=then)
        except TimeoutError:
            raise _Failed(
                RunOutcome(start=start, end=now_ms(), timed_out=True, timed_out_in_init=init, **base)
            ) from None
        except NoReply:
            raise _Failed(RunOutcome(start=start, end=now_ms(), crashed=True, **base)) from None

    @staticmethod
    def _artefact_key(request: RunRequest) -> str:
        runtime = runtime_of(request.kind)
        if runtime is None or not runtime.compiled:
            return ""
        init = request.init
        return artefact_key(owner_of(request.pool_key), request.kind, init.main, init.code, init.binary)

    async def _keep_artefact(self, conn: UdsConnection, key: str) -> None:
        """Take the compile step's output from the proxy (404: nothing was compiled, e.g. a jar)."""
        try:
            status, reply = await conn.post("/artefact", b"{}", self.config.logs_timeout_s)
            if status != 200:
                return
            artefact = base64.b64decode(msgspec.json.decode(reply, type=_ArtefactReply).artefact)
            await asyncio.to_thread(self.artefacts.put, key, artefact)
        except (TimeoutError, NoReply, msgspec.DecodeError, ValueError, OSError) as exc:
            log.warning("container pool: the compiled artefact was not kept: %s", exc)

    async def _logs(self, conn: UdsConnection, *, asked: bool = False) -> tuple[list[str], bool]:
        """The lines the action wrote since the last fetch (`asked`: requested along with the run); a proxy
        that cannot say leaves the container broken (it is then destroyed) and the run without logs."""
        try:
            if asked:
                status, reply = await conn.next_reply(self.config.logs_timeout_s)
            else:
                status, reply = await conn.post(*LOGS_REQUEST, self.config.logs_timeout_s)
            if status != 200:
                raise NoReply(f"/logs answered {status}")
            logs = msgspec.json.decode(reply, type=_LogsReply)
        except (TimeoutError, NoReply, msgspec.DecodeError):
            conn.abort()
            return [], False
        return logs.logs, logs.truncated

    async def _last_logs(self, entry: _Entry, outcome: RunOutcome) -> RunOutcome:
        """A timed-out run's logs until then, from the proxy's side door (it answers while /init or /run is
        still running), before the container is destroyed. After a broken reply (e.g. one past max_reply_mb)
        the proxy still answers too; a process that died took its lines with it (the door is refused)."""
        if not (outcome.timed_out or outcome.crashed) or entry.container is None:
            return outcome
        try:
            door = await asyncio.wait_for(
                UdsConnection.open(entry.container.socket_path + SIDE_DOOR, max_body=self._max_body),
                self.config.logs_timeout_s,
            )
        except (OSError, TimeoutError):
            return outcome
        try:
            logs, truncated = await self._logs(door)
        finally:
            door.abort()
        return msgspec.structs.replace(outcome, logs=logs, logs_truncated=truncated)

    def _pause_later(self, entry: _Entry) -> None:
        if self.config.pause_grace_s > 0 and self.backend.can_pause and not self._closing:
            entry.pausing = asyncio.create_task(self._pause_when_idle(entry, entry.last_used))

    async def _pause_when_idle(self, entry: _Entry, since: float) -> None:
        # OpenWhisk pauses a warm container after 10 s idle: code the action left running (threads, timers,
        # children) stops using the CPU, and the next run resumes it in a few milliseconds, not a cold start.
        await asyncio.sleep(self.config.pause_grace_s)
        if entry.busy or entry.last_used != since or entry.id not in self._entries or entry.container is None:
            return
        entry.paused = True  # from here on, a run that claims it waits for this task, then resumes it
        try:
            entry.paused = await self.backend.pause(entry.container)
        except SquallError as exc:
            entry.paused = False
            log.warning("container pool: pausing an idle container failed: %s", exc)

    async def _wake(self, entry: _Entry) -> None:
        """Make a claimed container runnable: stop its pending pause, or wait for it and resume."""
        pausing, entry.pausing = entry.pausing, None
        if pausing is not None and not pausing.done():
            if not entry.paused:
                pausing.cancel()  # still in its grace period
            await asyncio.wait({pausing})
        if entry.paused and entry.container is not None:
            await self.backend.resume(entry.container)
            entry.paused = False

    async def _start(self, entry: _Entry) -> None:
        entry.container = await self.backend.start(
            entry.family, entry.memory_mb, entry.uid, network=entry.network
        )
        entry.conn = await self.backend.connect(
            entry.container, self.config.ready_timeout_s, max_body=self._max_body
        )

    @property
    def _max_body(self) -> int:
        return self.config.max_reply_mb * 1024 * 1024

    # --- scheduling -----------------------------------------------------------------------------------------

    async def _acquire(self, want: Want) -> _Entry:
        if not self._queue:
            entry = self._assign(want)
            if entry is not None:
                return entry
        waiter: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._queue.append((want, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._discard(waiter.result())  # assigned as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._queue.remove((want, waiter))
            raise

    def _assign(self, want: Want) -> _Entry | None:
        """Decide now and reserve at once (no await in between): the container, or None to wait."""
        # Removing containers here must not serve the queue from inside this decision: _pump does it after.
        self._deciding = True
        try:
            return self._decide(want)
        finally:
            self._deciding = False

    def _decide(self, want: Want) -> _Entry | None:
        self._forget_dead()
        now = time.monotonic()
        decision = choose([e.slot() for e in self._entries.values()], want, self.config.memory_mb, now)
        if isinstance(decision, Reuse):
            entry = self._entries[decision.id]
            entry.busy = True
            entry.last_used = now
            if not decision.warm:
                # No longer a stem cell. Its replacement starts once this run is done: starting a container
                # now would compete for the CPU with this very cold start.
                entry.key = want.key
            return entry
        if isinstance(decision, Create):
            for victim in decision.evict:
                self._discard(self._entries[victim])
            entry = self._new_entry(want.family, want.memory_mb, want.network)
            entry.key = want.key
            return entry
        if isinstance(decision, Refuse):
            raise Unavailable(f"This action cannot run here: {decision.reason}.")
        return None

    def _new_entry(self, family: str, memory_mb: int, network: bool) -> _Entry:
        uid = pick_uid(
            {e.uid for e in self._entries.values()},
            self.backend.sandbox.uid_low,
            self.backend.sandbox.uid_high,
            self._rng,
        )
        entry = _Entry(f"c{next(self._ids)}", family, memory_mb, uid, network)
        self._entries[entry.id] = entry
        return entry

    def _pump(self) -> None:
        """Serve queued runs in order, as far as capacity now allows; then any run further back whose own warm
        container is idle (that takes no memory from the runs in front, so it need not wait behind them)."""
        while self._queue:
            want, waiter = self._queue[0]
            if waiter.done():
                self._queue.popleft()
                continue
            try:
                entry = self._assign(want)
            except SquallError as exc:
                self._queue.popleft()
                waiter.set_exception(exc)
                continue
            if entry is None:
                break
            self._queue.popleft()
            waiter.set_result(entry)
        for want, waiter in list(self._queue)[1:]:
            warm = None if waiter.done() else self._idle_warm(want)
            if waiter.done() or warm is not None:
                self._queue.remove((want, waiter))
            if warm is not None:
                warm.busy = True
                warm.last_used = time.monotonic()
                waiter.set_result(warm)

    def _idle_warm(self, want: Want) -> _Entry | None:
        for entry in self._entries.values():
            alive = entry.conn is not None and entry.conn.alive
            if not entry.busy and entry.key == want.key and entry.initialized and alive:
                return entry
        return None

    def _forget_dead(self) -> None:
        # An idle container whose proxy closed the connection died while waiting (e.g. the action's own
        # background thread called exit): it must not be handed a run.
        for entry in list(self._entries.values()):
            if not entry.busy and entry.conn is not None and not entry.conn.alive:
                self._discard(entry)

    def _discard(self, entry: _Entry) -> None:
        """Forget a container at once (its memory is free for the next decision) and destroy it behind."""
        if self._entries.pop(entry.id, None) is None:
            return
        if entry.conn is not None:
            entry.conn.abort()
        if entry.pausing is not None and not entry.paused:
            entry.pausing.cancel()
        if entry.container is not None:
            self._spawn(self._destroy(entry))
        if not self._closing:
            if not self._deciding:
                self._pump()
            self._replenish_soon()

    async def _destroy(self, entry: _Entry) -> None:
        if entry.pausing is not None:
            await asyncio.wait({entry.pausing})  # a pause under way ends before the kill, which thaws
        assert entry.container is not None
        await self.backend.destroy(entry.container, paused=entry.paused)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("container pool: background task failed: %s", task.exception())

    # --- stem cells and reaping -----------------------------------------------------------------------------

    def _replenish_soon(self) -> None:
        if self._closing or not self.prewarm:
            return
        if self._replenishing is None or self._replenishing.done():
            self._replenishing = asyncio.create_task(self._replenish(), name="pool-prewarm")

    async def _replenish(self) -> None:
        while not self._closing:
            if time.monotonic() - self._stem_failed_at < self.config.stem_retry_s:
                return  # the reaper's next tick tries again
            plan = plan_stems(
                [e.slot() for e in self._entries.values()],
                self.prewarm,
                self.config.prewarm_memory_mb,
                self.config.memory_mb,
                len(self._queue),
            )
            if not plan.start:
                return
            for victim in plan.evict:
                self._discard(self._entries[victim])
            entries = [self._new_entry(f, self.config.prewarm_memory_mb, False) for f in plan.start]
            results = await asyncio.gather(*(self._start(e) for e in entries), return_exceptions=True)
            for entry, result in zip(entries, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("container pool: a %s stem cell failed to start: %s", entry.family, result)
                    self._stem_failed_at = time.monotonic()
                    self._discard(entry)
                elif entry.id in self._entries:
                    entry.busy = False
                    entry.last_used = time.monotonic()
            self._pump()

    async def _reap_loop(self) -> None:
        interval = reap_interval(self.config.idle_timeout_s)
        while True:
            await asyncio.sleep(interval)
            slots = [e.slot() for e in self._entries.values()]
            for entry_id in reapable(slots, time.monotonic(), self.config.idle_timeout_s):
                entry = self._entries.get(entry_id)
                if entry is not None and not entry.busy:
                    self._discard(entry)
            self._forget_dead()
            self._replenish_soon()

    # --- reporting ------------------------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        entries = list(self._entries.values())
        used = used_mb(e.slot() for e in entries)
        return PoolStats(
            capacity_mb=self.config.memory_mb,
            used_mb=used,
            free_mb=self.config.memory_mb - used,
            containers=len(entries),
            warm=sum(1 for e in entries if not e.busy and e.initialized),
            stem=sum(1 for e in entries if not e.busy and e.key is None),
            busy=sum(1 for e in entries if e.busy),
            queued=len(self._queue),
            paused=sum(1 for e in entries if e.paused),
            families=self.families,
        )


class _ArtefactReply(msgspec.Struct, kw_only=True):
    artefact: str


class _LogsReply(msgspec.Struct, kw_only=True):
    logs: list[str] = []
    truncated: bool = False
