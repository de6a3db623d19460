"""Queue depths and consumer lag of each JetStream stream, read from the server when `/metrics` is scraped.

Read at scrape time rather than counted: JetStream already knows them exactly, for every process and host,
and a scrape every few seconds costs one stream info and one consumer listing per stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric

from broker import subjects
from broker.bus import JetStreamBus
from broker.errors import SquallError

log = logging.getLogger("squall.metrics")

STREAMS: Final = (
    subjects.TRIGGERS_STREAM,
    subjects.INVOKE_STREAM,
    subjects.ACTIVATIONS_STREAM,
    subjects.DEADLETTER_STREAM,
    subjects.EVENTS_STREAM,
)


async def backbone_families(bus: JetStreamBus, timeout_s: float = 2.0) -> list[Metric]:
    """Per stream: messages stored, its consumers, and their backlog (not yet delivered; delivered and not yet
    acknowledged). A stream that cannot be read is left out of this scrape, not failed."""
    messages = GaugeMetricFamily(
        "squall_stream_messages", "Messages stored in a JetStream stream.", labels=["stream"]
    )
    consumers = GaugeMetricFamily(
        "squall_stream_consumers", "Durable consumers of a stream.", labels=["stream"]
    )
    pending = GaugeMetricFamily(
        "squall_consumer_pending_messages",
        "Consumer lag: messages of a stream its consumers have not been delivered yet (summed over them).",
        labels=["stream"],
    )
    in_flight = GaugeMetricFamily(
        "squall_consumer_ack_pending_messages",
        "Messages delivered to a stream's consumers and not yet acknowledged (summed over them).",
        labels=["stream"],
    )

    async def one(stream: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                count, _ = await bus.count(stream)
                states = await bus.consumers(stream)
        except (SquallError, TimeoutError) as exc:
            log.debug("metrics: stream %s not read: %s", stream, exc)
            return
        messages.add_metric([stream], count)
        consumers.add_metric([stream], len(states))
        pending.add_metric([stream], sum(state.waiting for state in states))
        in_flight.add_metric([stream], sum(state.taken for state in states))

    await asyncio.gather(*(one(stream) for stream in STREAMS))
    return [messages, consumers, pending, in_flight]
