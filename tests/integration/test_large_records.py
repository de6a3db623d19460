"""Records too large for one NATS message travel as a stub pointing at the object store, and arrive whole."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats.js.errors
import pytest

from broker import codec, large_records, subjects
from broker.activation_store import ActivationStore
from broker.activations import SUCCESS, Activation, make_response
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.errors import NotFound
from broker.recorder import ActivationRecorder
from broker.topology import topology

LINE = "2026-01-01T00:00:00.000000000Z stdout: " + "x" * 160


def record(logs: list[str], result: object = None) -> Activation:
    return Activation(
        namespace=f"large-{uuid.uuid4().hex[:8]}",
        name="flood",
        subject="s",
        activationId=uuid.uuid4().hex,
        start=now_ms(),  # MongoDB's TTL index hides records from past their retention
        end=now_ms(),
        duration=0,
        response=make_response(SUCCESS, {"ok": True} if result is None else result),
        logs=logs,
        version="0.0.1",
        publish=False,
        annotations=[],
    )


async def stored(activations: ActivationStore, rec: Activation, deadline_s: float = 30.0) -> Activation:
    until = time.monotonic() + deadline_s
    while True:
        try:
            return await activations.get(rec.namespace, rec.activationId)
        except NotFound:
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.05)


async def publish(bus: JetStreamBus, message: large_records.Message, rec: Activation) -> None:
    await bus.publish(
        subjects.activation_subject(rec.namespace, rec.name),
        message.payload,
        msg_id=rec.activationId,
        headers=message.headers,
    )


async def test_a_record_that_fits_travels_as_it_is(bus: JetStreamBus) -> None:
    rec = record([LINE] * 10)
    message = await large_records.prepare(bus, rec)
    assert message.headers is None and codec.decode(message.payload, Activation) == rec


async def test_9_mb_of_logs_reach_mongodb_whole_and_the_object_is_then_deleted(
    bus: JetStreamBus, activation_store: ActivationStore, recorder: ActivationRecorder
) -> None:
    rec = record([LINE] * (9 * 1024 * 1024 // len(LINE)))
    started = time.monotonic()
    message = await large_records.prepare(bus, rec)
    prepared = time.monotonic() - started
    assert len(message.payload) <= bus.message_limit
    assert message.headers == {large_records.OBJECT_HEADER: rec.activationId}
    stub = codec.decode(message.payload, Activation)
    assert stub.logs == [] and stub.response == rec.response
    await publish(bus, message, rec)
    whole = await stored(activation_store, rec)
    recorded = time.monotonic() - started
    assert whole.logs == rec.logs
    store = await bus.object_store(subjects.LARGE_RECORDS_BUCKET)
    for _ in range(100):  # deleted just after the insert
        try:
            await store.get_info(rec.activationId)
        except nats.js.errors.ObjectNotFoundError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the object outlived its record's recording")
    print(f"9 MB of logs: stored in the object store in {prepared:.2f} s, in MongoDB after {recorded:.2f} s")


async def test_a_result_near_the_limit_is_left_out_of_the_stub_and_read_back_for_the_answer(
    bus: JetStreamBus, activation_store: ActivationStore, recorder: ActivationRecorder
) -> None:
    rec = record([LINE], {"big": "y" * (bus.message_limit - 100)})
    message = await large_records.prepare(bus, rec)
    stub = codec.decode(message.payload, Activation)
    assert stub.response.result is None and stub.logs == []
    answered = await large_records.with_result(bus, message.payload, message.headers)
    assert codec.decode(answered, Activation) == rec
    # A stub that kept its result is enough for the answer: no read.
    small = await large_records.prepare(bus, record([LINE] * (2 * 1024 * 1024 // len(LINE))))
    assert await large_records.with_result(bus, small.payload, small.headers) == small.payload
    await publish(bus, message, rec)
    assert (await stored(activation_store, rec)) == rec


async def test_a_stub_whose_object_is_gone_is_recorded_with_openwhisks_log_failure_notice(
    bus: JetStreamBus, activation_store: ActivationStore, recorder: ActivationRecorder
) -> None:
    rec = record([LINE] * (2 * 1024 * 1024 // len(LINE)))
    message = await large_records.prepare(bus, rec)
    await (await bus.object_store(subjects.LARGE_RECORDS_BUCKET)).delete(rec.activationId)
    await publish(bus, message, rec)
    got = await stored(activation_store, rec)
    assert got.response == rec.response
    assert [line[31:] for line in got.logs] == [
        "stderr: There was an issue while collecting your logs. Data might be missing."
    ]


def test_the_store_is_bounded_by_age_and_bytes(bus: JetStreamBus) -> None:
    spec = next(s for s in topology(bus.settings).object_stores if s.name == subjects.LARGE_RECORDS_BUCKET)
    assert spec.max_age_s == bus.settings.stream_max_age_days * 86400
    assert spec.max_bytes == bus.settings.large_records_max_mb * 1024 * 1024
