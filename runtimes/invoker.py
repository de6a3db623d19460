"""The invoker agent: pulls invocations from JetStream, runs them in the container pool, publishes their records.

Every invoker reads every namespace's queue on INVOKE (broker/queues.py): JetStream delivers a namespace
no more runs at once than its concurrentInvocations, and the invoker's run slots go to the namespaces in turn
(runtimes/fair_gate.py), so a namespace's backlog delays no other namespace. Queues are found as they are made
(JetStream's consumer-created advisories) and by a look every few seconds, which also brings each queue's limit
to its namespace's current one. An event-driven run deferred past its namespace's invocationsPerMinute waits in
its queue until its minute; one that waited longer than `max_queue_wait_s` is dead-lettered as "throttled".

Retries (a Squall addition): an invocation with a retry policy (rule-fired) that fails as its policy retries
is not run again here. Its attempt's record is published and the message is nak'ed with the backoff as delay,
so JetStream itself redelivers it when the wait is over: no invoker holds it meanwhile, and a drain or a crash
loses nothing. The attempt number is the delivery count, so a redelivery after a crash or a drain counts as an
attempt too. A failure that is not retried goes to the DEADLETTER stream (broker/dead_letters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Final, Protocol

import msgspec

from broker import codec, large_records, log_context, metrics, subjects, trace_context
from broker.action_refs import ResolvedAction
from broker.activations import APPLICATION_ERROR, INTERNAL_ERROR, Activation, annotation, entity_path
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.config import Settings
from broker.dead_letters import DeadLetters, FailureReason, after_attempt, dead_letter
from broker.entities import ACTIONS, Action, KeyValue, split_namespace
from broker.entitlements import check_run
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.errors import BackboneUnavailable, Forbidden, NotFound, SquallError, WrongCollection
from broker.health import UNHEALTHY_ERRORS, ErrorWindow, HeartbeatPublisher, Load
from broker.invocations import RESULT_HEADER, Invocation, hands_api_key
from broker.key_seal import KeySeal, key_seal
from broker.kinds import SEQUENCE
from broker.limits import MB
from broker.queues import InvokeQueues, QueueFollower
from broker.retry_policy import delay_ms
from broker.stream_worker import Delivery, Retry, StreamWorker
from broker.throttles import Throttles
from broker.topology import (
    INVOKERS_BUCKET,
    MAX_DELIVERIES,
)
from broker.trigger_events import attempt_activation_id
from runtimes import activation_result as results
from runtimes.contract import InitPayload, RunOutcome, RunPayload, RunRequest
from runtimes.fair_gate import FairGate
from runtimes.sequences import SequenceRunner

log = logging.getLogger("squall.invoker")

MAX_ATTEMPTS: Final = MAX_DELIVERIES  # deliveries of one invocation before it is recorded as failed, not run
THROTTLED: Final = "throttled"
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
    seal: KeySeal | None = None,
) -> RunRequest:
    """The pool's request for one run: both OpenWhisk protocol bodies, with the `__OW_*` values of §3.1. The
    caller's key is opened (with `seal`) only for an action of the caller's own that asks for it."""
    limits = action.limits
    deadline = str((now if now is not None else now_ms()) + limits.timeout)
    api_key = None
    owner, _ = split_namespace(action.namespace)
    sealed = invocation.sealed_api_key
    if sealed and seal is not None and hands_api_key(action.annotations, owner, invocation.namespace):
        api_key = seal.open(sealed, invocation.namespace)
    run = RunPayload(
        value=value,
        namespace=invocation.namespace,
        action_name=f"/{action.namespace}/{action.name}",
        action_version=action.version,
        activation_id=invocation.activationId,
        transaction_id=invocation.transaction_id or invocation.activationId,
        deadline=deadline,
        api_key=api_key,
        trace_id=trace_context.trace_id(invocation.traceparent) or None,
        traceparent=invocation.traceparent or None,
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
    too, and so is a deferral to a later minute, so they come on top of the crashes the invoker tolerates."""
    retries = invocation.retry.attempts - 1 if invocation.retry is not None else 0
    deferral = 1 if invocation.not_before is not None else 0
    return MAX_ATTEMPTS + retries + deferral


def first_start(invocation: Invocation, delivery: int) -> bool:
    """Whether this delivery is the run's first chance to start (not a retry's, nor one after a crash)."""
    return delivery <= (2 if invocation.not_before is not None else 1)


def overdue(invocation: Invocation, now: int, max_wait_ms: int) -> bool:
    """An event-driven run that cannot start within the maximum wait after its event: it is dead-lettered."""
    if not invocation.event_driven or not invocation.published:
        return False
    return max(now, invocation.not_before or 0) - invocation.published > max_wait_ms


def throttled_message(max_wait_ms: int) -> str:
    return (
        f"The run did not start within {max_wait_ms / 1000:g} s of its event: its namespace's limits "
        "(concurrentInvocations, invocationsPerMinute) kept it waiting."
    )


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
        ack_wait_s: float | None = None,
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
        self.api_host = api_host
        self._load = load
        self.errors = ErrorWindow()
        self.completed = 0
        self.max_wait_ms = int(bus.settings.max_queue_wait_s * 1000)
        self._gate = FairGate(lambda: self.capacity)
        self._worker: StreamWorker[Invocation] = StreamWorker(
            bus,
            None,  # one queue per namespace, added as they are found
            msgspec.json.Decoder(Invocation).decode,
            handle=self._handle,
            max_in_flight=lambda: self.capacity,
            drain_timeout_s=drain_timeout_s,
            name=f"invoker-{self.invoker_id}",
        )
        self._heartbeat = HeartbeatPublisher(
            bus, self.invoker_id, self.load, version=version, bucket=health_bucket
        )
        self._cache = EntityCache(bus, store)
        self._throttles = Throttles(bus, store, bus.settings)
        self._following = QueueFollower(
            InvokeQueues(bus, bus.settings, self._throttles.concurrency_of),
            self._worker,
            adjust=None
            if ack_wait_s is None
            else lambda spec: msgspec.structs.replace(spec, ack_wait_s=ack_wait_s),
            name=f"queues-{self.invoker_id}",
        )
        self._sequences = SequenceRunner(self._cache, self._execute, self._publish)
        self._dead_letters = DeadLetters(bus)
        self._seal = key_seal(bus.settings.invocation_secret)
        self._metrics = metrics.current()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> InvokerAgent:
        await self._cache.__aenter__()
        await self._throttles.__aenter__()
        await self._heartbeat.__aenter__()  # visible before the first invocation is taken
        await self._worker.__aenter__()
        await self._following.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._following.__aexit__(None, None, None)
        await self._worker.__aexit__(exc_type, exc, tb)  # no new work; runs finish or go back (nak)
        await self._heartbeat.__aexit__(None, None, None)
        await self._throttles.__aexit__(None, None, None)
        await self._cache.__aexit__(None, None, None)

    def load(self) -> Load:
        """The heartbeat's figures (also the moment the pool's gauges are brought up to date)."""
        base = self._load() if self._load is not None else Load()
        return msgspec.structs.replace(
            base, in_flight=self.in_flight, system_errors=self.errors.errors, completed=self.completed
        )

    @property
    def in_flight(self) -> int:
        return self._worker.in_flight

    @property
    def capacity(self) -> int:
        """Invocations taken at once: one while unhealthy (its pool keeps failing), so that the work goes to
        healthy invokers while each run this one still takes tells whether it has recovered."""
        return 1 if self.errors.errors > UNHEALTHY_ERRORS else self.max_in_flight

    # -- running ---------------------------------------------------------------------------------------

    async def _handle(self, delivery: Delivery[Invocation]) -> Retry | None:
        invocation = delivery.value
        with log_context.working_on(invocation.namespace, invocation.activationId, invocation.traceparent):
            return await self._handle_one(delivery, invocation)

    async def _handle_one(self, delivery: Delivery[Invocation], invocation: Invocation) -> Retry | None:
        now = now_ms()
        if first_start(invocation, delivery.deliveries) and overdue(invocation, now, self.max_wait_ms):
            await self._throttled(delivery, now)
            return None
        if invocation.not_before is not None and now < invocation.not_before:
            return Retry((invocation.not_before - now) / 1000)  # its namespace's rate has room only then
        result_to = delivery.header(RESULT_HEADER)
        async with self._gate.slot(invocation.namespace):
            if invocation.retry is not None:
                verdict = await self._attempt(delivery, result_to)
            else:
                await self._publish(await self._process(invocation, delivery.deliveries), result_to)
                verdict = None
        self.completed += 1
        return verdict

    async def _throttled(self, delivery: Delivery[Invocation], now: int) -> None:
        """A run that waited too long for its namespace's capacity: its record says so, and it is dead-lettered
        (reason "throttled"), where a redrive runs it."""
        invocation = delivery.value
        message = throttled_message(self.max_wait_ms)
        record = results.failure_record(
            invocation=invocation,
            name=invocation.action.rpartition("/")[2],
            path=invocation.action,
            status=APPLICATION_ERROR,
            message=message,
            now=now,
        )
        await self._publish(record)
        letter = dead_letter(invocation, record, 0, delivery.stored_ms)
        reason = FailureReason(status=THROTTLED, error=message)
        await self._dead_letters.publish(msgspec.structs.replace(letter, reason=reason))

    async def _attempt(self, delivery: Delivery[Invocation], result_to: str | None) -> Retry | None:
        """One attempt of an invocation with a retry policy: its record, then a retry, a dead letter or done."""
        invocation = delivery.value
        assert invocation.retry is not None
        attempt = delivery.deliveries
        first_id = invocation.activationId
        record = await self._process(as_attempt(invocation, attempt), attempt, poison_limit(invocation))
        record = mark_attempt(record, attempt, first_id)
        verdict = after_attempt(invocation.retry, record.response.status, attempt)
        if verdict == "retry":
            await self._publish(record)
            # JetStream keeps the message and redelivers it after the backoff; until then it is nobody's.
            return Retry(delay_ms(invocation.retry, attempt) / 1000)
        await self._publish(record, result_to)
        if verdict == "dead-letter":
            first_failed = (record.end or record.start) if attempt == 1 else delivery.stored_ms
            await self._dead_letters.publish(dead_letter(invocation, record, attempt, first_failed))
        return None

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
            # What the run may use is decided now, not when it was queued: a rule's run, a redriven dead letter
            # or a run that waited in its queue stops at a package unpublished meanwhile.
            await check_run(self._cache, invocation.namespace, invocation.action, invocation.binding)
            stored = await self._cache.get(ACTIONS, root, path)
        except Forbidden as exc:
            return results.failure_record(
                invocation=invocation,
                name=name,
                path=invocation.action,
                status=APPLICATION_ERROR,
                message=exc.message,
                now=now_ms(),
            )
        except (NotFound, WrongCollection):
            return results.failure_record(
                invocation=invocation,
                name=name,
                path=invocation.action,
                status=APPLICATION_ERROR,
                message=results.ACTION_REMOVED,
                now=now_ms(),
            )
        except BackboneUnavailable:
            # NATS for a moment without the bucket (an election after a node died, a reconnection): the run
            # waits for it in its queue (the stream worker delivers it again) rather than being recorded failed.
            raise
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
        request = run_request(
            invocation, action, resolved.revision, value, api_host=self.api_host, seal=self._seal
        )
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
        """Store the record on ACTIVATIONS (msg id = activation id); tell a waiting API as soon as it is sent.
        A record too large for one message goes to the object store first, and both get its stub."""
        message = await large_records.prepare(self.bus, record)
        self._count(record)
        subject = subjects.activation_subject(record.namespace, entity_path(record))
        ack = await self.bus.publish_async(
            subject, message.payload, msg_id=record.activationId, headers=message.headers
        )
        if result_to:
            with contextlib.suppress(Exception):
                await self.bus.send(result_to, message.payload, headers=message.headers)
        try:
            await ack
        except BackboneUnavailable:
            # The run is over: its record waits out an election (a node died) instead of the message being
            # delivered again, which would run the action again and spend one of its deliveries.
            await self.bus.publish_until_stored(
                subject, message.payload, record.activationId, message.headers
            )

    def _count(self, record: Activation) -> None:
        kind = annotation(record, "kind")
        kind = kind if isinstance(kind, str) else "unknown"
        status = metrics.status_label(record.response.status)
        self._metrics.invocations(kind, status, namespace=record.namespace).inc()
        if record.duration is not None:
            self._metrics.activation_duration(kind).observe(record.duration / 1000)


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
    """A heartbeat's view of the pool's `stats()` (runtimes/pool.py's PoolStats); its gauges are set too."""
    gauges = metrics.current()
    gauges.pool_containers("busy").set(stats.busy)
    gauges.pool_containers("warm").set(stats.warm - stats.paused)
    gauges.pool_containers("paused").set(stats.paused)
    gauges.pool_containers("prewarm").set(stats.stem)
    gauges.pool_queued().set(stats.queued)
    return Load(
        capacity_mb=stats.capacity_mb, free_mb=stats.free_mb, warm=stats.containers, families=stats.families
    )


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
