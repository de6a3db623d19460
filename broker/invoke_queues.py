"""Per-namespace queues on INVOKE: made before a namespace's first run is published, kept at its concurrency.

Each namespace's runs wait in their own durable consumer (broker/topology.py `invoke_queue`) whose
`max_ack_pending` is the namespace's `concurrentInvocations`: JetStream itself holds back what is over the limit,
durably, and every invoker reads every queue (runtimes/invoker.py), so one namespace's backlog never stands in
front of another's runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from broker import subjects
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.errors import NotFound
from broker.invocations import Invocation
from broker.topology import ConsumerSpec, invoke_queue, queue_namespace

log = logging.getLogger("squall.queues")

# How many namespaces a process remembers having made a queue for (beyond it, it asks JetStream again: cheap).
MAX_KNOWN: Final = 100_000

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


class InvokeQueues:
    """Makes sure a namespace's queue exists before its runs are published: `await queues.ensure(ns)`."""

    def __init__(
        self, bus: JetStreamBus, settings: Settings, concurrency_of: ConcurrencyOf | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        self._concurrency_of = concurrency_of
        self._known: set[str] = set()

    async def concurrency(self, namespace: str) -> int:
        if self._concurrency_of is None:
            return self.settings.concurrent_invocations
        return await self._concurrency_of(namespace)

    async def spec(self, namespace: str) -> ConsumerSpec:
        return invoke_queue(self.settings, namespace, await self.concurrency(namespace))

    async def ensure(self, namespace: str) -> None:
        if namespace in self._known:
            return
        await self.bus.provision_consumer(await self.spec(namespace))
        if len(self._known) >= MAX_KNOWN:
            self._known.clear()
        self._known.add(namespace)

    async def backlog(self, namespace: str) -> Backlog:
        spec = await self.spec(namespace)
        try:
            state = await self.bus.consumer(spec)
        except NotFound:  # no run was ever published for it
            return Backlog(queued=0, running=0, concurrentInvocations=spec.max_ack_pending)
        # The queue's own limit: a changed one reaches it within an invoker's next look (DISCOVER_EVERY_S).
        return Backlog(queued=state.waiting, running=state.taken, concurrentInvocations=state.max_ack_pending)

    async def reconcile(self) -> list[ConsumerSpec]:
        """Every queue, as it should be: queues made for namespaces whose runs were published without one, and
        each queue's limit brought to its namespace's current concurrentInvocations. Answers the queues."""
        states = await self.bus.consumers(subjects.INVOKE_STREAM)
        queues: list[ConsumerSpec] = []
        have = set()
        for state in states:
            namespace = queue_namespace(state.name)
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
        _, per_subject = await self.bus.count(subjects.INVOKE_STREAM, subjects.INVOKE_SUBJECTS)
        for namespace in namespaces_with_runs(per_subject) - have:
            spec = await self.spec(namespace)
            await self.bus.provision_consumer(spec)
            queues.append(spec)
        return queues
