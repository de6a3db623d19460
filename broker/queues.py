"""Per-namespace queues: each namespace's trigger events (TRIGGERS) and runs (INVOKE) wait in durable consumers
of their own, so that one namespace's backlog never stands in front of another's messages.

- A publisher makes the namespace's queue before its first message (`ensure`, remembered per process).
- The readers (rule engines, invokers) follow the queues as they appear (`QueueFollower`: JetStream's
  consumer-created advisories, and a look every few seconds) and read them all with one stream worker.
- A run queue's `max_ack_pending` is its namespace's `concurrentInvocations`: JetStream itself holds back, durably,
  the runs over the limit, and hands the next one out when a run ends. The look also brings each run queue's
  limit to the namespace's current one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from broker import subjects
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.errors import NotFound, SquallError
from broker.invocations import Invocation
from broker.jetstream_records import PubAck
from broker.periodic import Periodic
from broker.stream_worker import StreamWorker
from broker.topology import (
    EVENT_QUEUE_PREFIX,
    INVOKE_QUEUE_PREFIX,
    LEGACY_RULE_ENGINE,
    ConsumerSpec,
    event_queue,
    invoke_queue,
    legacy_rule_engine,
    queue_namespace,
)
from broker.trigger_events import TriggerEvent

log = logging.getLogger("squall.queues")

# How many namespaces a process remembers having made a queue for (beyond it, it asks JetStream again: cheap).
MAX_KNOWN: Final = 100_000
LOOK_EVERY_S: Final = 2.0  # the look for queues that no advisory announced, and for changed limits
QUEUE_CREATED: Final = "$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream}.*"

ConcurrencyOf = Callable[[str], Awaitable[int]]


class Backlog(msgspec.Struct, frozen=True, kw_only=True):
    """A namespace's runs on INVOKE: `queued` wait for its capacity (or an invoker), `running` are taken by
    invokers (running, waiting for a run slot, or deferred to the minute its rate has room in)."""

    queued: int
    running: int
    concurrentInvocations: int


def subject_of(invocation: Invocation) -> str:
    """Where an invocation waits: in the queue of the namespace that caused it (and is charged for it)."""
    return subjects.invoke_subject(invocation.namespace, invocation.action)


def namespaces_with_runs(per_subject: dict[str, int]) -> set[str]:
    """The namespaces that have runs on INVOKE, from its per-subject message counts."""
    found = set()
    for subject, count in per_subject.items():
        parts = subject.split(".")
        if count > 0 and len(parts) >= 3 and parts[0] == "invoke":
            found.add(subjects.untoken(parts[1]))
    return found


class NamespaceQueues:
    """The queues of one stream, one per namespace: `await queues.ensure(ns)` before publishing."""

    stream: str = ""
    prefix: str = ""

    def __init__(self, bus: JetStreamBus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self._known: set[str] = set()

    async def spec(self, namespace: str) -> ConsumerSpec:
        raise NotImplementedError

    async def ensure(self, namespace: str) -> None:
        if namespace in self._known:
            return
        spec = await self.spec(namespace)
        await self.bus.provision_consumer(spec)
        if self.settings.replicas > 1:
            await self._wait_running(spec)
        if len(self._known) >= MAX_KNOWN:
            self._known.clear()
        self._known.add(namespace)

    async def _wait_running(self, spec: ConsumerSpec) -> None:
        """On a cluster, a create may be answered (e.g. "exists" to a second creator) before the consumer's own
        leader has fixed where a new-messages queue starts; a message published before that would be skipped.
        Its leader answers an info request only once it runs, so the first publish waits for that."""
        for _ in range(100):
            try:
                await self.bus.consumer(spec)
                return
            except SquallError:  # not found yet, or no answer
                await asyncio.sleep(0.05)
        log.warning("queue %s on %s did not answer within 5 s", spec.durable, spec.stream)

    async def existing(self) -> list[ConsumerSpec]:
        """Every queue of the stream, as it should be (for a reader to follow)."""
        found = []
        for state in await self.bus.consumers(self.stream):
            namespace = queue_namespace(state.name, self.prefix)
            if namespace is not None:
                found.append(await self.spec(namespace))
        return found


class EventQueues(NamespaceQueues):
    """Each namespace's trigger events on TRIGGERS, for the rule engines."""

    stream = subjects.TRIGGERS_STREAM
    prefix = EVENT_QUEUE_PREFIX

    async def spec(self, namespace: str) -> ConsumerSpec:
        return event_queue(self.settings, namespace)

    async def publish(self, event: TriggerEvent) -> None:
        """Store a trigger event (msg id = its activation id) in its namespace's queue; PayloadTooLarge when it
        cannot be one message."""
        payload = self.bus.encode(event)
        await self.ensure(event.namespace)
        subject = subjects.trigger_subject(event.namespace, event.trigger)
        await self.bus.publish(subject, payload, msg_id=event.activationId)

    async def publish_many(self, events: Sequence[TriggerEvent]) -> list[Exception | None]:
        """Store several events, pipelined; each one's failure (None for stored), in order."""
        for namespace in {event.namespace for event in events}:
            await self.ensure(namespace)
        pending: list[asyncio.Future[PubAck] | Exception] = []
        for event in events:
            try:
                payload = self.bus.encode(event)
                subject = subjects.trigger_subject(event.namespace, event.trigger)
                pending.append(await self.bus.publish_async(subject, payload, msg_id=event.activationId))
            except Exception as exc:
                pending.append(exc)
        futures = [item for item in pending if not isinstance(item, Exception)]
        settled = iter(await asyncio.gather(*futures, return_exceptions=True))
        outcomes: list[Exception | None] = []
        for item in pending:
            if isinstance(item, Exception):
                outcomes.append(item)
                continue
            result = next(settled)
            outcomes.append(result if isinstance(result, Exception) else None)
        return outcomes

    async def existing(self) -> list[ConsumerSpec]:
        """The event queues, and the one engine consumer of earlier versions while it still has events
        (removed once drained: it would otherwise see every new event a second time)."""
        found = await super().existing()
        legacy = legacy_rule_engine(self.settings)
        try:
            state = await self.bus.consumer(legacy)
        except NotFound:
            return found
        if state.waiting or state.taken:
            return [*found, legacy]
        log.info("the drained engine consumer %s of an earlier version is removed", LEGACY_RULE_ENGINE)
        await self.bus.delete_consumer(self.stream, LEGACY_RULE_ENGINE)
        return found


class InvokeQueues(NamespaceQueues):
    """Each namespace's runs on INVOKE, for the invokers, with the namespace's concurrency as the limit."""

    stream = subjects.INVOKE_STREAM
    prefix = INVOKE_QUEUE_PREFIX

    def __init__(
        self, bus: JetStreamBus, settings: Settings, concurrency_of: ConcurrencyOf | None = None
    ) -> None:
        super().__init__(bus, settings)
        self._concurrency_of = concurrency_of

    async def concurrency(self, namespace: str) -> int:
        if self._concurrency_of is None:
            return self.settings.concurrent_invocations
        return await self._concurrency_of(namespace)

    async def spec(self, namespace: str) -> ConsumerSpec:
        return invoke_queue(self.settings, namespace, await self.concurrency(namespace))

    async def backlog(self, namespace: str) -> Backlog:
        spec = await self.spec(namespace)
        try:
            state = await self.bus.consumer(spec)
        except NotFound:  # no run was ever published for it
            return Backlog(queued=0, running=0, concurrentInvocations=spec.max_ack_pending)
        # The queue's own limit: a changed one reaches it within an invoker's next look (LOOK_EVERY_S).
        return Backlog(queued=state.waiting, running=state.taken, concurrentInvocations=state.max_ack_pending)

    async def existing(self) -> list[ConsumerSpec]:
        """Every run queue, as it should be: queues made for namespaces whose runs were published without one,
        and each queue's limit brought to its namespace's current concurrentInvocations."""
        queues: list[ConsumerSpec] = []
        have = set()
        for state in await self.bus.consumers(self.stream):
            namespace = queue_namespace(state.name, self.prefix)
            if namespace is None:
                continue
            have.add(namespace)
            spec = await self.spec(namespace)
            if spec.max_ack_pending != state.max_ack_pending:
                log.info(
                    "queue of %s: concurrency %d -> %d",
                    namespace,
                    state.max_ack_pending,
                    spec.max_ack_pending,
                )
                await self.bus.provision_consumer(spec)
            queues.append(spec)
        _, per_subject = await self.bus.count(self.stream, subjects.INVOKE_SUBJECTS)
        for namespace in namespaces_with_runs(per_subject) - have:
            spec = await self.spec(namespace)
            await self.bus.provision_consumer(spec)
            queues.append(spec)
        return queues


class QueueFollower:
    """`async with QueueFollower(queues, worker)`: the worker reads every queue of the stream, found at once
    through JetStream's consumer-created advisories, and by a look every LOOK_EVERY_S (an advisory can be
    missed in a reconnection); queues that are gone are dropped."""

    def __init__(
        self,
        queues: NamespaceQueues,
        worker: StreamWorker[Any],
        *,
        adjust: Callable[[ConsumerSpec], ConsumerSpec] | None = None,
        name: str = "queues",
    ) -> None:
        self.queues = queues
        self.worker = worker
        self.adjust = adjust  # e.g. a test's shorter ack wait
        self.name = name
        self._looking = Periodic(self.look, LOOK_EVERY_S, name=name)
        self._advisories: Any = None

    async def __aenter__(self) -> QueueFollower:
        created = QUEUE_CREATED.format(stream=self.queues.stream)
        self._advisories = await self.queues.bus.subscribe(created, self._on_created)
        await self.look()
        await self._looking.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._looking.__aexit__(None, None, None)
        if self._advisories is not None:
            try:
                await self._advisories.unsubscribe()
            except Exception as failed:  # the connection is going away with the role anyway
                log.debug("%s: unsubscribing advisories: %s", self.name, failed)

    async def look(self) -> None:
        try:
            specs = await self.queues.existing()
            for spec in specs:
                if self.adjust is None:
                    await self.worker.add(spec, provision=False)
                else:  # the adjusted spec applies to the consumer itself
                    await self.worker.add(self.adjust(spec), provision=True)
        except SquallError as exc:  # NATS away for a moment: the next look will tell
            log.warning("%s: cannot list the queues: %s", self.name, exc.message)
            return
        for durable in self.worker.durables - {spec.durable for spec in specs}:
            await self.worker.remove(durable)

    async def _on_created(self, msg: Msg) -> None:
        if msg.subject.rpartition(".")[2] not in self.worker.durables:
            await self.look()
