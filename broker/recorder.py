"""The activation recorder: moves records from the ACTIVATIONS stream into MongoDB in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from broker.activation_store import ActivationStore
from broker.activations import Activation
from broker.bus import JetStreamBus
from broker.subjects import ACTIVATIONS_STREAM, ACTIVATIONS_SUBJECTS

log = logging.getLogger("squall.recorder")

DURABLE = "recorder"
BATCH = 256
GATHER_S = 0.02


class ActivationRecorder:
    """A durable pull consumer: fetch a batch, write it with one `insert_many`, then ack it.

    Acking only after the write means a crash redelivers instead of losing; the unique index on
    `activationId` makes the redelivered records no-ops.
    """

    def __init__(
        self,
        bus: JetStreamBus,
        store: ActivationStore,
        *,
        drain_timeout_s: float = 5.0,
        ack_wait_s: float = 30.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.drain_timeout_s = drain_timeout_s
        self.ack_wait_s = ack_wait_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._decoder = msgspec.json.Decoder(Activation)
        self.recorded = 0

    async def __aenter__(self) -> ActivationRecorder:
        self._sub = await self.bus.js.pull_subscribe(
            ACTIVATIONS_SUBJECTS,
            durable=DURABLE,
            stream=ACTIVATIONS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_ack_pending=BATCH * 8,
            ),
        )
        self._task = asyncio.create_task(self._run(), name="activation-recorder")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        if self._task is None:
            return
        # The loop notices the stop between batches; a batch in flight finishes (or is redelivered later).
        try:
            await asyncio.wait_for(self._task, self.drain_timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self._sub.fetch(BATCH, timeout=0.5)
                await self._record(await self._gather(msgs))
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception:
                # The loop must outlive any one failure: unacked records are redelivered after ack_wait.
                log.exception("recording activations failed; retrying")
                await asyncio.sleep(0.5)

    async def _gather(self, msgs: list[Any]) -> list[Any]:
        """Top a short batch up for a few milliseconds: one insert of many records costs about what one
        insert of a single record does, and nothing waits on the recorder (blocking invokes get their
        record straight from the invoker)."""
        deadline = time.monotonic() + GATHER_S
        while len(msgs) < BATCH and (left := deadline - time.monotonic()) > 0:
            try:
                msgs += await self._sub.fetch(BATCH - len(msgs), timeout=left)
            except (NatsTimeoutError, TimeoutError):
                break
        return msgs

    async def _record(self, msgs: list[Any]) -> None:
        records: list[Activation] = []
        good = []
        for msg in msgs:
            try:
                records.append(self._decoder.decode(msg.data))
                good.append(msg)
            except msgspec.DecodeError:
                # A record that cannot be read would block the stream forever; keep it out and say so.
                log.error(
                    "dropping an unreadable activation record (stream seq %s)", msg.metadata.sequence.stream
                )
                await msg.term()
        try:
            await self.store.insert_many(records)
        except Exception:
            log.exception("storing %d activations failed; they will be redelivered", len(records))
            for msg in good:
                await msg.nak(delay=1)
            return
        for msg in good:
            await msg.ack()
        self.recorded += len(records)
