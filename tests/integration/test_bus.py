"""The JetStream bus against a real nats-server: provisioning, acknowledged and deduplicated publishing."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import nats.errors
import pytest

from broker import subjects
from broker.bus import RESEND_AFTER_S, JetStreamBus, Outgoing, redact, stream_config
from broker.config import Settings
from broker.errors import InternalError, Unavailable
from broker.patient_kv import READ_ATTEMPT_S
from broker.topology import topology


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[JetStreamBus]:
    async with JetStreamBus(nats_url) as bus:
        await bus.provision()
        yield bus


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _count(bus: JetStreamBus, stream: str, subject: str) -> int:
    info = await bus.js.stream_info(stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def test_provision_twice_and_with_changed_settings(nats_url: str) -> None:
    async with JetStreamBus(nats_url) as bus:
        await bus.provision()
        await bus.provision()
        bus.settings = msgspec.structs.replace(bus.settings, stream_max_age_days=3)
        try:
            await bus.provision()
            info = await bus.js.stream_info(subjects.TRIGGERS_STREAM)
            assert info.config.max_age == 3 * 86400
        finally:
            bus.settings = Settings(nats_url=nats_url)
            await bus.provision()
        info = await bus.js.stream_info(subjects.TRIGGERS_STREAM)
        assert info.config.max_age == 7 * 86400
        for spec in topology(bus.settings).buckets:
            status = await (await bus.kv(spec.name)).status()
            assert status.history == 1


def test_stream_configs_follow_the_design() -> None:
    configs = {s.name: stream_config(s) for s in topology(Settings(stream_max_age_days=2)).streams}
    assert configs[subjects.INVOKE_STREAM].retention == "workqueue"
    assert configs[subjects.TRIGGERS_STREAM].max_age == 2 * 86400
    assert configs[subjects.ACTIVATIONS_STREAM].max_age == 2 * 86400
    assert configs[subjects.DEADLETTER_STREAM].max_age == 14 * 86400
    assert configs[subjects.INVOKE_STREAM].discard == "new"
    assert all(c.max_bytes and c.max_bytes > 0 for c in configs.values())
    assert all(c.storage == "file" and c.duplicate_window == 120 for c in configs.values())


async def test_same_msg_id_is_stored_once(bus: JetStreamBus) -> None:
    subject = subjects.trigger_subject(f"ns-{uuid.uuid4().hex[:8]}", "t")
    msg_id = uuid.uuid4().hex
    first = await bus.publish(subject, b"1", msg_id=msg_id)
    second = await bus.publish(subject, b"2", msg_id=msg_id)
    assert first.stream == subjects.TRIGGERS_STREAM
    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    assert await _count(bus, subjects.TRIGGERS_STREAM, subject) == 1


async def test_publish_many_acks_every_message_in_order(bus: JetStreamBus) -> None:
    subject = subjects.activation_subject(f"ns-{uuid.uuid4().hex[:8]}", "a")
    acks = await bus.publish_many(Outgoing(subject=subject, payload=b"%d" % i) for i in range(500))
    seqs = [ack.seq for ack in acks]
    assert len(seqs) == 500
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 500
    assert await _count(bus, subjects.ACTIVATIONS_STREAM, subject) == 500


async def test_publish_many_deduplicates_a_retried_batch(bus: JetStreamBus) -> None:
    subject = subjects.trigger_subject(f"ns-{uuid.uuid4().hex[:8]}", "t")
    batch = [Outgoing(subject=subject, payload=b"x", msg_id=f"{subject}-{i}") for i in range(20)]
    first = await bus.publish_many(batch)
    again = await bus.publish_many(batch)
    assert not any(a.duplicate for a in first)
    assert all(a.duplicate for a in again)
    assert await _count(bus, subjects.TRIGGERS_STREAM, subject) == 20


async def test_publish_errors_are_raised_not_hung(bus: JetStreamBus) -> None:
    # nats-py's publish_async leaves such a future pending forever; the bus must answer at once.
    subject = subjects.trigger_subject("ns", "t")
    with pytest.raises(InternalError, match="expected stream does not match"):
        await asyncio.wait_for(
            bus.publish(subject, b"x", headers={"Nats-Expected-Stream": "NOPE"}), timeout=2
        )
    with pytest.raises(Unavailable, match="no JetStream stream"):
        await asyncio.wait_for(bus.publish("nowhere.at.all", b"x"), timeout=2)


async def test_publish_until_stored_outlasts_a_stream_that_cannot_store_yet(bus: JetStreamBus) -> None:
    """As a stream electing a leader answers no one, so does a stream not made yet; once it can store, the
    message is stored, once."""
    name = f"LATE_{uuid.uuid4().hex[:8]}"
    subject = f"late.{name}"
    with pytest.raises(Unavailable, match="no JetStream stream"):
        await bus.publish_until_stored(subject, b"x", "m-1", within_s=0.3)

    async def make_stream_later() -> None:
        await asyncio.sleep(0.5)
        await bus.js.add_stream(name=name, subjects=[subject])

    try:
        maker = asyncio.create_task(make_stream_later())
        ack = await asyncio.wait_for(bus.publish_until_stored(subject, b"x", "m-1", within_s=10), timeout=15)
        await maker
        assert ack.stream == name and not ack.duplicate
        assert await _count(bus, name, subject) == 1
    finally:
        await bus.js.delete_stream(name)


def _lose_first_send(bus: JetStreamBus, subject: str, times: int = 1) -> list[bytes]:
    """The connection drops the first `times` messages sent to a subject that starts with `subject`, as one sent
    to a stream leader that died with it or on a connection that broke; what it dropped is in the list."""
    nc = bus.nc
    send = nc.publish
    lost: list[bytes] = []

    async def publish(subj: str, payload: bytes = b"", **kwargs: object) -> None:
        if subj.startswith(subject) and len(lost) < times:
            lost.append(payload)
            return
        await send(subj, payload, **kwargs)  # type: ignore[arg-type]

    nc.publish = publish  # type: ignore[method-assign]
    return lost


async def test_a_lost_publish_with_a_msg_id_is_sent_again_before_the_timeout(nats_url: str) -> None:
    async with JetStreamBus(nats_url, request_timeout=5.0) as bus:
        await bus.provision()
        subject = subjects.trigger_subject(f"ns-{uuid.uuid4().hex[:8]}", "t")
        lost = _lose_first_send(bus, subject)
        started = time.monotonic()
        ack = await bus.publish(subject, b"x", msg_id=uuid.uuid4().hex)
        took = time.monotonic() - started
        assert lost == [b"x"]
        assert not ack.duplicate
        assert RESEND_AFTER_S <= took < RESEND_AFTER_S + 1.5, took  # not the 5-s timeout
        assert await _count(bus, subjects.TRIGGERS_STREAM, subject) == 1


async def test_a_copy_of_a_stored_publish_sent_again_is_stored_once(nats_url: str) -> None:
    """Stored, its acknowledgement lost: the copy sent again is JetStream's duplicate, acknowledged."""
    async with JetStreamBus(nats_url) as bus, JetStreamBus(nats_url) as other:
        await bus.provision()
        subject = subjects.trigger_subject(f"ns-{uuid.uuid4().hex[:8]}", "t")
        msg_id = uuid.uuid4().hex
        _lose_first_send(bus, subject)
        pending = await bus.publish_async(subject, b"x", msg_id=msg_id)
        first = await other.publish(subject, b"x", msg_id=msg_id)  # what the lost send would have stored
        ack = await asyncio.wait_for(pending, timeout=RESEND_AFTER_S + 2)
        assert ack.duplicate and ack.seq == first.seq
        assert await _count(bus, subjects.TRIGGERS_STREAM, subject) == 1


async def test_a_lost_publish_without_a_msg_id_is_not_sent_twice(nats_url: str) -> None:
    """Without a msg id a second copy could be stored twice: it waits out the timeout and is refused."""
    async with JetStreamBus(nats_url, request_timeout=RESEND_AFTER_S + 1) as bus:
        await bus.provision()
        subject = subjects.trigger_subject(f"ns-{uuid.uuid4().hex[:8]}", "t")
        _lose_first_send(bus, subject)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="no acknowledgement"):
            await bus.publish(subject, b"x")
        assert time.monotonic() - started >= RESEND_AFTER_S + 1
        assert await _count(bus, subjects.TRIGGERS_STREAM, subject) == 0


async def test_a_kv_read_nobody_answered_is_sent_again(nats_url: str) -> None:
    """A read that reached a bucket without a leader is dropped, not refused: it is asked again, and the first
    answer wins, well before the request timeout; one that is never answered times out as before."""
    async with JetStreamBus(nats_url, request_timeout=READ_ATTEMPT_S * 2.5) as bus:
        await bus.provision()
        kv = await bus.kv(subjects.ENTITIES_BUCKET)
        key = f"patience.{uuid.uuid4().hex}"
        await kv.put(key, b"v")
        lost = _lose_first_send(bus, "$JS.API.")
        started = time.monotonic()
        entry = await kv.get(key)
        took = time.monotonic() - started
        assert entry.value == b"v" and len(lost) == 1
        assert READ_ATTEMPT_S <= took < READ_ATTEMPT_S + 0.9, took

        lost = _lose_first_send(bus, "$JS.API.", times=1000)
        started = time.monotonic()
        with pytest.raises(nats.errors.TimeoutError):
            await kv.get(key)
        assert len(lost) == 3  # attempts at 0, 1 and 2 s of the 2.5 s
        assert time.monotonic() - started == pytest.approx(READ_ATTEMPT_S * 2.5, abs=0.3)


async def test_unreachable_nats_is_unavailable_quickly() -> None:
    url = f"nats://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"cannot reach NATS at {url}: "):
        async with JetStreamBus(url):
            pass
    assert time.monotonic() - started < 3


async def test_missing_url_and_unprovisioned_bucket_are_unavailable(nats_url: str) -> None:
    with pytest.raises(Unavailable, match="no NATS URL"):
        await JetStreamBus(Settings(nats_url="")).connect()
    async with JetStreamBus(nats_url) as bus:
        with pytest.raises(Unavailable, match="provision"):
            await bus.kv("no_such_bucket")


async def test_exit_drains_and_disconnects(nats_url: str) -> None:
    async with JetStreamBus(nats_url) as bus:
        await bus.provision()
        pending = await bus.publish_async(subjects.activation_subject("drain", "a"), b"x")
        nc = bus.nc
    assert pending.done()
    assert pending.result().seq > 0
    assert nc.is_closed
    with pytest.raises(Unavailable):
        _ = bus.nc


def test_redact_hides_credentials() -> None:
    assert redact("nats://user:secret@host:4222") == "nats://host:4222"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
