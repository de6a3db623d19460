"""The invoker agent: pulls invocations from JetStream, runs them in the container pool, publishes their records.

Retries (a Squall addition): an invocation with a retry policy (rule-fired) that fails as its policy retries
is not run again here. Its attempt's record is published and the message is nak'ed with the backoff as delay,
so JetStream itself redelivers it when the wait is over: no invoker holds it meanwhile, and a drain or a crash
loses nothing. The attempt number is the delivery count, so a redelivery after a crash or a drain counts as an
attempt too. A failure that is not retried goes to the DEADLETTER stream (broker/dead_letters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol

import msgspec
from nats.aio.msg import Msg
from nats.js import api

from broker import codec, subjects
from broker.action_refs import ResolvedAction
from broker.activations import APPLICATION_ERROR, INTERNAL_ERROR, Activation, entity_path
from broker.bus import JetStreamBus, translate
from broker.config import Settings
from broker.dead_letters import DeadLetters, after_attempt, dead_letter
from broker.entities import ACTIONS, Action, KeyValue, split_namespace
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.errors import NotFound, SquallError, WrongCollection
from broker.health import (
    INVOKERS_BUCKET,
    UNHEALTHY_ERRORS,
    ErrorWindow,
    HeartbeatPublisher,
    Load,
    now_ms,
)
from broker.invocations import PROVIDE_API_KEY, RESULT_HEADER, Invocation
from broker.kinds import SEQUENCE
from broker.limits import MB
from broker.periodic import Periodic
from broker.retry_policy import delay_ms
from broker.trigger_events import attempt_activation_id
from runtimes import activation_result as results
from runtimes.contract import InitPayload, RunOutcome, RunPayload, RunRequest
from runtimes.sequences import SequenceRunner

log = logging.getLogger("squall.invoker")

DURABLE: Final = "invoker"  # one durable consumer shared by every invoker: they split the work queue
ACK_WAIT_S: Final = 10.0  # a silent invoker's work goes to another after this (OpenWhisk: offline after 10 s)
PULL_EXPIRES_S: Final = 5.0  # pull requests are renewed this often (one lost in a reconnect is forgotten)
MAX_ATTEMPTS: Final = 5  # deliveries of one invocation before it is recorded as failed instead of run again
GAVE_UP: Final = "The invocation could not be completed: its invoker stopped {n} times while running it."
GAVE_UP_RETRYING: Final = (
    "The invocation could not be completed: it was delivered {n} times, more than its retry policy's "
    "attempts and the invoker stops that are tolerated."
)


class Pool(Protocol):
    """What the invoker needs of a container pool (runtimes/pool.py implements it)."""

    async def run(self, request: RunRequest) -> RunOutcome: ...


# -- the run request (pure) ---------------------------------------------------------------------------------


def pool_key(action: Action, revision: int, namespace: str) -> str:
    """Warm containers are shared by runs of the same action revision for the same invoking namespace."""
    key = f"{action.namespace}/{action.name}@{revision}"
    root, _ = split_namespace(action.namespace)
    return key if root == namespace else f"{key}#{namespace}"


def split_arguments(value: Any, action: Action) -> tuple[dict[str, str], Any]:
    """OpenWhisk's `partitionArguments`: parameters marked `init` go to /init's env (as strings), the rest to /run."""
    init_keys = {p.key for p in action.parameters if p.init}
    if not init_keys or not isinstance(value, dict):
        return {}, value
    env = {
        k: v if isinstance(v, str) else codec.encode(v).decode() for k, v in value.items() if k in init_keys
    }
    return env, {k: v for k, v in value.items() if k not in init_keys}


def run_request(
    invocation: Invocation,
    action: Action,
    revision: int,
    value: Any,
    *,
    api_host: str = "",
    now: int | None = None,
) -> RunRequest:
    """The pool's request for one run: both OpenWhisk protocol bodies, with the `__OW_*` values of §3.1."""
    limits = action.limits
    deadline = str((now if now is not None else now_ms()) + limits.timeout)
    wants_key = results.annotation_truthy(action.annotations, PROVIDE_API_KEY, absent=True)
    api_key = invocation.api_key if wants_key else None
    run = RunPayload(
        value=value,
        namespace=invocation.namespace,
        action_name=f"/{action.namespace}/{action.name}",
        action_version=action.version,
        activation_id=invocation.activationId,
        transaction_id=invocation.transaction_id or invocation.activationId,
        deadline=deadline,
        api_key=api_key,
    )
    init_env, run_value = split_arguments(value, action)
    env = {**init_env, **_ow_env(run)}
    if api_host:
        env["__OW_API_HOST"] = api_host
    exec = action.exec
    init = InitPayload(
        name=action.name,
        main=exec.main if isinstance(exec.main, str) and exec.main else "main",
        code=exec.code if isinstance(exec.code, str) else "",
        binary=exec.binary if isinstance(exec.binary, bool) else False,
        env=env,
    )
    return RunRequest(
        pool_key=pool_key(action, revision, invocation.namespace),
        kind=exec.kind,
        memory_mb=limits.memory,
        timeout_ms=limits.timeout,
        log_limit_bytes=limits.logs * MB,
        init=init,
        run=msgspec.structs.replace(run, value=run_value),
    )


def _ow_env(run: RunPayload) -> dict[str, str]:
    """Every non-`value` field of the run body as `__OW_<UPPER>`, as the runtimes export them."""
    fields = msgspec.structs.asdict(run)
    return {f"__OW_{k.upper()}": str(v) for k, v in fields.items() if k != "value" and v is not None}


def poison_limit(invocation: Invocation) -> int:
    """The delivery that is recorded as failed instead of run: a retry policy's own attempts are deliveries
    too, so they come on top of the crashes the invoker tolerates."""
    retries = invocation.retry.attempts - 1 if invocation.retry is not None else 0
    return MAX_ATTEMPTS + retries


def gave_up(invocation: Invocation, delivery: int) -> str:
    if invocation.retry is None:
        return GAVE_UP.format(n=delivery - 1)
    return GAVE_UP_RETRYING.format(n=delivery - 1)


def as_attempt(invocation: Invocation, attempt: int) -> Invocation:
    """The invocation as attempt number `attempt` runs it: under that attempt's own activation id."""
    aid = attempt_activation_id(invocation.activationId, attempt)
    return (
        invocation
        if aid == invocation.activationId
        else msgspec.structs.replace(invocation, activationId=aid)
    )


def mark_attempt(record: Activation, attempt: int, first_id: str) -> Activation:
    """A retry's record says which attempt it was and which run it retries (`cause` stays the trigger's)."""
    if attempt <= 1:
        return record
    notes = [KeyValue(key="attempt", value=attempt), KeyValue(key="retryOf", value=first_id)]
    return msgspec.structs.replace(record, annotations=[*record.annotations, *notes])


def default_invoker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# -- the agent ----------------------------------------------------------------------------------------------


@dataclass
class _Work:
    """One invocation taken from the stream."""

    msg: Msg
    since: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None


class InvokerAgent:
    """`async with InvokerAgent(bus, store, pool):` takes invocations until the block ends, then drains:
    no new work, in-flight runs finish under the drain deadline, the rest go back to the stream (nak)."""

    def __init__(
        self,
        bus: JetStreamBus,
        store: EntityStore,
        pool: Pool,
        *,
        invoker_id: str | None = None,
        max_in_flight: int = 16,
        ack_wait_s: float = ACK_WAIT_S,
        drain_timeout_s: float = 5.0,
        api_host: str = "",
        load: Callable[[], Load] | None = None,
        health_bucket: str = INVOKERS_BUCKET,
        version: str = "",
    ) -> None:
        self.bus = bus
        self.store = store
        self.pool = pool
        self.invoker_id = invoker_id or default_invoker_id()
        self.max_in_flight = max_in_flight
        self.ack_wait_s = ack_wait_s
        self.drain_timeout_s = drain_timeout_s
        self.api_host = api_host
        self._load = load
        self.errors = ErrorWindow()
        self.completed = 0
        self._work: dict[int, _Work] = {}
        self._ids = itertools.count()
        self._pending = 0  # messages asked for in pull requests and not yet delivered or expired
        self._last_pull = 0.0
        self._stopping = False
        self._inbox = ""
        self._sub: Any = None
        self._ticker = Periodic(self._tick, min(0.25, self.ack_wait_s / 3), name=f"invoker-{self.invoker_id}")
        self._heartbeat = HeartbeatPublisher(
            bus, self.invoker_id, self.load, version=version, bucket=health_bucket
        )
        self._cache = EntityCache(bus, store)
        self._sequences = SequenceRunner(self._cache, self._execute, self._publish)
        self._dead_letters = DeadLetters(bus)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> InvokerAgent:
        await self._ensure_consumer()
        await self._cache.__aenter__()
        nc = self.bus.nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._on_message)
        await self._heartbeat.__aenter__()
        await self._ticker.__aenter__()
        await self._top_up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        deadline = time.monotonic() + self.drain_timeout_s
        # JetStream drops the pull requests of an inbox nobody listens to, so unsubscribing first means no
        # new work comes here; naking it instead would bounce it back to our open requests, spending its
        # delivery attempts.
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        tasks = [w.task for w in self._work.values() if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for work in list(self._work.values()):
            if work.task is not None and not work.task.done():
                work.task.cancel()  # its handler naks the message: another invoker runs it now
        leftovers = [w.task for w in self._work.values() if w.task is not None]
        if leftovers:
            await asyncio.wait(leftovers, timeout=1.0)
        await self._ticker.__aexit__(None, None, None)  # it kept telling JetStream about long runs until now
        await self._heartbeat.__aexit__(None, None, None)
        await self._cache.__aexit__(None, None, None)

    async def _ensure_consumer(self) -> None:
        config = api.ConsumerConfig(
            name=DURABLE,
            durable_name=DURABLE,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_ack_pending=-1,
            max_waiting=512,
        )
        try:
            await self.bus.js.add_consumer(subjects.INVOKE_STREAM, config)
        except Exception as exc:
            raise translate(exc, "creating the invoker consumer") from None

    def load(self) -> Load:
        base = self._load() if self._load is not None else Load()
        return msgspec.structs.replace(
            base, in_flight=len(self._work), system_errors=self.errors.errors, completed=self.completed
        )

    @property
    def in_flight(self) -> int:
        return len(self._work)

    @property
    def capacity(self) -> int:
        """Invocations taken at once: one while unhealthy (its pool keeps failing), so that the work goes to
        healthy invokers while each run this one still takes tells whether it has recovered."""
        return 1 if self.errors.errors > UNHEALTHY_ERRORS else self.max_in_flight

    # -- pulling ---------------------------------------------------------------------------------------

    async def _top_up(self) -> None:
        """Keep pull requests open for as many messages as there are free slots."""
        if self._stopping:
            return
        now = time.monotonic()
        if self._pending > 0 and now - self._last_pull > PULL_EXPIRES_S + 2.0:
            self._pending = 0  # their expiry notices were lost (e.g. a reconnect): they are gone
        capacity = self.capacity
        free = capacity - len(self._work) - self._pending
        if free <= 0 or (self._pending > 0 and free < max(1, capacity // 4)):
            return
        request = {"batch": free, "expires": int(PULL_EXPIRES_S * 1e9)}
        self._pending += free
        self._last_pull = now
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.INVOKE_STREAM}.{DURABLE}"
        try:
            await self.bus.nc.publish(subject, msgspec.json.encode(request), reply=self._inbox)
        except Exception as exc:
            self._pending -= free
            log.warning("invoker %s cannot ask for work: %s", self.invoker_id, exc)

    async def _tick(self) -> None:
        """Renews pull requests as they expire, and tells JetStream that long runs are still going."""
        await self._top_up()
        progress_every = self.ack_wait_s / 3
        now = time.monotonic()
        for work in list(self._work.values()):
            if now - work.since >= progress_every:
                work.since = now
                with contextlib.suppress(Exception):
                    await work.msg.in_progress()

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None and not msg.data:
            await self._on_status(msg, status)
            return
        self._pending = max(0, self._pending - 1)
        if self._stopping:
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        key = next(self._ids)
        work = _Work(msg)
        self._work[key] = work
        work.task = asyncio.create_task(self._handle(key, work))

    async def _on_status(self, msg: Msg, status: str) -> None:
        if status == "100":  # idle heartbeat
            return
        assert msg.headers is not None
        left = msg.headers.get("Nats-Pending-Messages")
        if left is not None and left.isdigit():
            self._pending = max(0, self._pending - int(left))
        elif status in ("404", "408", "409"):
            self._pending = 0
        if status == "409" and "Consumer Deleted" in msg.headers.get("Description", ""):
            with contextlib.suppress(Exception):
                await self._ensure_consumer()
        await self._top_up()

    # -- running ---------------------------------------------------------------------------------------

    async def _handle(self, key: int, work: _Work) -> None:
        msg = work.msg
        try:
            try:
                invocation = codec.decode(msg.data, Invocation)
            except SquallError:
                log.error("dropping an unreadable invocation (%d bytes)", len(msg.data))
                await msg.term()
                return
            result_to = msg.headers.get(RESULT_HEADER) if msg.headers else None
            if invocation.retry is not None:
                await self._attempt(msg, invocation, result_to)
            else:
                record = await self._process(invocation, msg.metadata.num_delivered)
                await self._publish(record, result_to)
                await msg.ack()
            self.completed += 1
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            log.exception("invocation not completed; it will be delivered again")
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)
        finally:
            self._work.pop(key, None)
            if not self._stopping:
                await self._top_up()

    async def _attempt(self, msg: Msg, invocation: Invocation, result_to: str | None) -> None:
        """One attempt of an invocation with a retry policy: its record, then a retry, a dead letter or done."""
        assert invocation.retry is not None
        attempt = msg.metadata.num_delivered
        first_id = invocation.activationId
        record = await self._process(as_attempt(invocation, attempt), attempt, poison_limit(invocation))
        record = mark_attempt(record, attempt, first_id)
        verdict = after_attempt(invocation.retry, record.response.status, attempt)
        if verdict == "retry":
            await self._publish(record)
            # JetStream keeps the message and redelivers it after the backoff; until then it is nobody's.
            await msg.nak(delay=delay_ms(invocation.retry, attempt) / 1000)
            return
        await self._publish(record, result_to)
        if verdict == "dead-letter":
            queued = int(msg.metadata.timestamp.timestamp() * 1000)
            first_failed = (record.end or record.start) if attempt == 1 else queued
            await self._dead_letters.publish(dead_letter(invocation, record, attempt, first_failed))
        await msg.ack()

    async def _process(
        self, invocation: Invocation, delivery: int, poison_at: int = MAX_ATTEMPTS
    ) -> Activation:
        """The record of one invocation: a run, a sequence, or the reason it could not run."""
        root, path = _split_action(invocation.action)
        name = path.rpartition("/")[2]
        if delivery >= poison_at:
            return results.internal_error(
                invocation,
                name=name,
                path=invocation.action,
                message=gave_up(invocation, delivery),
                now=now_ms(),
            )
        try:
            stored = await self._cache.get(ACTIONS, root, path)
        except (NotFound, WrongCollection):
            return results.failure_record(
                invocation=invocation,
                name=name,
                path=invocation.action,
                status=APPLICATION_ERROR,
                message=results.ACTION_REMOVED,
                now=now_ms(),
            )
        except SquallError as exc:
            log.warning("reading action %s failed: %s", invocation.action, exc.message)
            return results.internal_error(
                invocation,
                name=name,
                path=invocation.action,
                message=results.ACTION_FETCH_ERROR,
                now=now_ms(),
            )
        action = stored.entity
        if action.exec.kind == SEQUENCE:
            return await self._sequences.run(invocation, action)
        resolved = ResolvedAction(action=action, revision=stored.revision, parameters=[], binding=None)
        return await self._execute(invocation, resolved, invocation.params, False)

    async def _execute(
        self, invocation: Invocation, resolved: ResolvedAction, value: Any, caused_by_sequence: bool
    ) -> Activation:
        """Run one code action in the pool and make its record."""
        action = resolved.action
        request = run_request(invocation, action, resolved.revision, value, api_host=self.api_host)
        try:
            outcome = await self.pool.run(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.record(True)
            log.error("running %s failed in the pool: %s", results.action_path(action), exc)
            return results.failure_record(
                invocation=invocation,
                name=action.name,
                path=results.action_path(action),
                status=INTERNAL_ERROR,
                message=results.RESOURCE_PROVISION_ERROR,
                now=now_ms(),
                version=action.version,
                kind=action.exec.kind,
                caused_by_sequence=caused_by_sequence,
            )
        self.errors.record(False)
        return results.action_record(
            invocation=invocation, action=action, outcome=outcome, caused_by_sequence=caused_by_sequence
        )

    async def _publish(self, record: Activation, result_to: str | None = None) -> None:
        """Store the record on ACTIVATIONS (msg id = activation id); tell a waiting API as soon as it is sent."""
        payload = codec.encode(record)
        limit = self.bus.nc.max_payload
        if len(payload) > limit:
            record = results.fit(record, limit)
            payload = codec.encode(record)
        root = record.namespace
        ack = await self.bus.publish_async(
            subjects.activation_subject(root, entity_path(record)), payload, msg_id=record.activationId
        )
        if result_to:
            with contextlib.suppress(Exception):
                await self.bus.nc.publish(result_to, payload)
        await ack


def _split_action(fqn: str) -> tuple[str, str]:
    """`ns/[pkg/]name` as (namespace, `[pkg/]name`)."""
    root, _, path = fqn.partition("/")
    return root, path


def concurrency(capacity_mb: int, stem_cells: int, stem_mb: int, action_mb: int = 256) -> int:
    """How many invocations an invoker takes at once: as many default-size containers as fit beside its stem
    cells. Taking more makes the pool queue them, and a queued run evicts an idle stem cell for a new
    container, which the pool then starts again: measured, 8 runs at once on a 2048 MB pool with two stem
    cells complete about half as many activations per second as 6."""
    return max(2, (capacity_mb - stem_cells * stem_mb) // action_mb)


def pool_load(stats: Any) -> Load:
    """A heartbeat's view of the pool's `stats()` (runtimes/pool.py's PoolStats)."""
    return Load(capacity_mb=stats.capacity_mb, free_mb=stats.free_mb, warm=stats.containers)


@contextlib.asynccontextmanager
async def invoker_role(
    settings: Settings, bus: JetStreamBus, store: EntityStore
) -> AsyncIterator[InvokerAgent]:
    """The invoker role for `squall standalone` and `squall serve invoker`: a container pool and an agent.

    Enter it after the API role: it then knows the API's real port for `__OW_API_HOST`.
    """
    from runtimes.pool import ContainerPool

    async with (
        ContainerPool(settings) as pool,
        InvokerAgent(
            bus,
            store,
            pool,
            api_host=settings.api_url,
            drain_timeout_s=settings.drain_timeout_s,
            load=lambda: pool_load(pool.stats()),
            max_in_flight=concurrency(
                pool.config.memory_mb, sum(pool.prewarm.values()), pool.config.prewarm_memory_mb
            ),
        ) as agent,
    ):
        yield agent
