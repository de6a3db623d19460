"""The activation recorder: moves records from the ACTIVATIONS stream into MongoDB in batches."""

from __future__ import annotations

from types import TracebackType

import msgspec

from broker.activation_store import ActivationStore
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.stream_worker import Delivery, StreamWorker
from broker.topology import RECORDER, topology

BATCH = 256
# A short batch waits this long for company: one insert of many records costs about what one insert of a single
# record does, and nothing waits on the recorder (blocking invokes get their record straight from the invoker).
GATHER_S = 0.02


class ActivationRecorder:
    """A batch handler on the recorder's durable consumer: one `insert_many` per batch, then the acks.

    Acking only after the write means a crash redelivers instead of losing; the unique index on `activationId`
    makes the redelivered records no-ops.
    """

    def __init__(
        self,
        bus: JetStreamBus,
        store: ActivationStore,
        *,
        drain_timeout_s: float | None = None,
        ack_wait_s: float | None = None,
    ) -> None:
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
        await self.store.insert_many([delivery.value for delivery in batch])
