"""The activation recorder: moves records from the ACTIVATIONS stream into MongoDB in batches."""

from __future__ import annotations

from types import TracebackType

import msgspec

from broker import large_records, metrics
from broker.activation_store import ActivationStore
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.stream_worker import Delivery, StreamWorker
from broker.topology import RECORDER, topology

BATCH = 256
# A short batch waits this long for company: one insert of many records costs about what one insert of a single
# record does, and nothing waits on the recorder (blocking invokes get their record straight from the invoker).
GATHER_S = 0.02


class ActivationRecorder:
    """A batch handler on the recorder's durable consumer: one `insert_many` per batch, then the acks.

    Acking only after the write means a crash redelivers instead of losing; the unique index on `activationId`
    makes the redelivered records no-ops. A stub of a record too large for one message (broker/large_records.py)
    is replaced by the whole record from the object store, one at a time: a batch of them would otherwise hold
    up to 256 records of 10 MB of logs each in memory.
    """

    def __init__(
        self,
        bus: JetStreamBus,
        store: ActivationStore,
        *,
        drain_timeout_s: float | None = None,
        ack_wait_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        spec = topology(bus.settings).consumer(RECORDER)
        if ack_wait_s is not None:
            spec = msgspec.structs.replace(spec, ack_wait_s=ack_wait_s)
        self._worker = StreamWorker(
            bus,
            spec,
            msgspec.json.Decoder(Activation).decode,
            handle_batch=self._record,
            max_in_flight=BATCH * 2,  # one batch being written while the next gathers
            batch_size=BATCH,
            gather_s=GATHER_S,
            drain_timeout_s=bus.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s,
            name="recorder",
        )
        counters = metrics.current()
        self._written = counters.records_written()
        self._lag = counters.recorder_lag()

    @property
    def recorded(self) -> int:
        return self._worker.handled

    async def __aenter__(self) -> ActivationRecorder:
        await self._worker.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._worker.__aexit__(exc_type, exc, tb)

    async def _record(self, batch: list[Delivery[Activation]]) -> None:
        large = [d for d in batch if d.header(large_records.OBJECT_HEADER)]
        small = [d for d in batch if not d.header(large_records.OBJECT_HEADER)]
        # Each record keeps its stream sequence: the position a live stream resumes from once JetStream
        # no longer holds it (api/routes/activation_stream.py).
        await self.store.insert_many([d.value for d in small], [position(d) for d in small])
        for delivery in large:
            name = delivery.header(large_records.OBJECT_HEADER)
            record = await large_records.load(self.bus, delivery.msg.data, name)
            await self.store.insert(record, position(delivery))
        for delivery in large:  # only once MongoDB has them: a crash before this redelivers, and loads again
            await large_records.forget(self.bus, delivery.header(large_records.OBJECT_HEADER) or "")
        self._written.inc(len(batch))
        now = now_ms()
        for delivery in batch:
            self._lag.observe(max(0, now - delivery.stored_ms) / 1000)


def position(delivery: Delivery[Activation]) -> int:
    """A record's ACTIVATIONS stream sequence."""
    return int(delivery.msg.metadata.sequence.stream)
