"""The one consumer loop against a real nats-server: handlers, verdicts, give-up, batches and drain."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import msgspec
import pytest

from broker.bus import JetStreamBus, Outgoing
from broker.errors import BackboneUnavailable
from broker.stream_worker import Delivery, Retry, StreamWorker
from broker.topology import ConsumerSpec, StreamSpec
from tests.conditions import eventually


class Item(msgspec.Struct, frozen=True):
    n: int


decode = msgspec.json.Decoder(Item).decode


@pytest.fixture
async def spec(bus: JetStreamBus) -> ConsumerSpec:
    """A stream and a consumer of its own for each test (short ack wait, give up at the second delivery)."""
    tag = uuid.uuid4().hex[:8]
    await bus.provision_stream(StreamSpec(name=f"WORKER_{tag}", subjects=(f"worker.{tag}.>",), max_age_s=600))
    return ConsumerSpec(stream=f"WORKER_{tag}", durable="w", ack_wait_s=2.0, max_deliveries=2)


async def publish(bus: JetStreamBus, spec: ConsumerSpec, *payloads: bytes) -> None:
    subject = f"worker.{spec.stream.removeprefix('WORKER_')}.x"
    for payload in payloads:
        await bus.publish(subject, payload)


async def test_each_message_is_handled_once_and_unreadable_ones_are_terminated(
    bus: JetStreamBus, spec: ConsumerSpec
) -> None:
    seen: Counter[int] = Counter()

    async def handle(delivery: Delivery[Item]) -> None:
        seen[delivery.value.n] += 1

    async with StreamWorker(bus, spec, decode, handle=handle, max_in_flight=8) as worker:
        await publish(bus, spec, b"not json", *(msgspec.json.encode(Item(i)) for i in range(50)))
        await eventually(lambda: _true(worker.handled == 50 and worker.terminated == 1), what="50 handled")
    assert seen == Counter(range(50))
    assert await bus.backlog(spec) == 0


async def test_a_retry_verdict_brings_the_message_back_after_its_delay(
    bus: JetStreamBus, spec: ConsumerSpec
) -> None:
    deliveries: list[int] = []

    async def handle(delivery: Delivery[Item]) -> Retry | None:
        deliveries.append(delivery.deliveries)
        return Retry(0.2) if delivery.deliveries == 1 else None

    async with StreamWorker(bus, spec, decode, handle=handle) as worker:
        await publish(bus, spec, msgspec.json.encode(Item(1)))
        await eventually(lambda: _true(worker.handled == 1), what="the retried message")
    assert deliveries == [1, 2]


async def test_a_message_that_keeps_failing_goes_to_the_give_up_hook_once(
    bus: JetStreamBus, spec: ConsumerSpec
) -> None:
    given_up: list[tuple[int, str]] = []

    async def handle(delivery: Delivery[Item]) -> None:
        raise RuntimeError("cannot")

    async def give_up(delivery: Delivery[Item], exc: Exception) -> None:
        given_up.append((delivery.deliveries, str(exc)))

    async with StreamWorker(bus, spec, decode, handle=handle, give_up=give_up) as worker:
        await publish(bus, spec, msgspec.json.encode(Item(1)))
        await eventually(lambda: _true(worker.gave_up == 1), what="the give-up", deadline_s=10)
    assert given_up == [(2, "cannot")]
    assert await bus.backlog(spec) == 0


async def test_batches_are_bounded_and_acknowledged(bus: JetStreamBus, spec: ConsumerSpec) -> None:
    batches: list[int] = []

    async def handle_batch(batch: list[Delivery[Item]]) -> None:
        batches.append(len(batch))

    async with StreamWorker(
        bus, spec, decode, handle_batch=handle_batch, batch_size=100, max_in_flight=200
    ) as worker:
        await bus.publish_many(
            Outgoing(
                subject=f"worker.{spec.stream.removeprefix('WORKER_')}.x",
                payload=msgspec.json.encode(Item(i)),
            )
            for i in range(450)
        )
        await eventually(lambda: _true(worker.handled == 450), what="450 in batches")
    assert sum(batches) == 450
    assert max(batches) <= 100
    assert len(batches) >= 5
    assert await bus.backlog(spec) == 0


async def test_drain_gives_an_unfinished_message_back_at_once(bus: JetStreamBus, spec: ConsumerSpec) -> None:
    started = asyncio.Event()

    async def stuck(delivery: Delivery[Item]) -> None:
        started.set()
        await asyncio.Event().wait()

    async with StreamWorker(bus, spec, decode, handle=stuck, drain_timeout_s=0.2):
        await publish(bus, spec, msgspec.json.encode(Item(7)))
        await asyncio.wait_for(started.wait(), 5)
    taken: list[tuple[int, int]] = []

    async def handle(delivery: Delivery[Item]) -> None:
        taken.append((delivery.value.n, delivery.deliveries))

    async with StreamWorker(bus, spec, decode, handle=handle) as worker:
        # Well within the 2 s ack wait: the drain nak'ed it instead of letting it time out.
        await eventually(lambda: _true(worker.handled == 1), deadline_s=1.5, what="the redelivery")
    assert taken == [(7, 2)]


async def _true(value: bool) -> bool:
    return value


async def test_nats_unavailable_for_a_while_never_makes_a_handler_give_up(
    bus: JetStreamBus, spec: ConsumerSpec
) -> None:
    """A stream electing a leader refuses publishes for seconds: the messages wait for it, not for the give-up."""
    deliveries: list[int] = []
    given_up: list[int] = []

    async def handle(delivery: Delivery[Item]) -> None:
        deliveries.append(delivery.deliveries)
        if delivery.deliveries <= 3:  # past the spec's max_deliveries of 2
            raise BackboneUnavailable("publishing to x: no JetStream stream answered")

    async def give_up(delivery: Delivery[Item], exc: Exception) -> None:
        given_up.append(delivery.deliveries)

    async with StreamWorker(bus, spec, decode, handle=handle, give_up=give_up) as worker:
        await publish(bus, spec, msgspec.json.encode(Item(1)))
        await eventually(
            lambda: _true(worker.handled == 1), what="the message once NATS is back", deadline_s=15
        )
    assert deliveries == [1, 2, 3, 4] and given_up == []
