"""The backbone's topology as data: every consumer on a declared stream, replicas from one setting."""

from __future__ import annotations

import fnmatch

from broker import subjects
from broker.config import Settings
from broker.topology import (
    EVENT_QUEUE_PREFIX,
    RECORDER,
    event_queue,
    invoke_queue,
    queue_namespace,
    topology,
)


def test_every_consumer_reads_a_declared_stream_and_every_subject_has_one_stream() -> None:
    shape = topology(Settings())
    streams = {s.name: s for s in shape.streams}
    assert {c.stream for c in shape.consumers} <= set(streams)
    for subject in ("trigger.ns.t", "invoke.ns.a", "activation.ns.a", "deadletter.ns.x"):
        owners = [
            s for s in shape.streams if any(fnmatch.fnmatch(subject, p.replace(">", "*")) for p in s.subjects)
        ]
        assert len(owners) == 1, subject


def test_policies_follow_the_design() -> None:
    shape = topology(Settings(stream_max_age_days=2, broker_ack_wait_s=4.0, invoker_ack_wait_s=7.0))
    streams = {s.name: s for s in shape.streams}
    assert streams[subjects.INVOKE_STREAM].retention == "work-queue"
    assert streams[subjects.TRIGGERS_STREAM].max_age_s == 2 * 86400
    # Letters wait for a human, for a while (SQUALL_DEADLETTER_MAX_AGE_DAYS).
    assert streams[subjects.DEADLETTER_STREAM].max_age_s == 14 * 86400
    events = event_queue(Settings(broker_ack_wait_s=4.0), "a.b c")
    assert events.deliver == "new"  # a new queue must not replay the event history
    assert events.ack_wait_s == 4.0 and events.filter_subject == "trigger.a=2Eb=20c.>"
    assert queue_namespace(events.durable, EVENT_QUEUE_PREFIX) == "a.b c"
    assert shape.consumer(RECORDER).deliver == "all"
    queue = invoke_queue(Settings(invoker_ack_wait_s=7.0), "a.b c", 20)
    assert queue.ack_wait_s == 7.0 and queue.max_ack_pending == 20
    assert queue.filter_subject == subjects.invoke_filter("a.b c")
    assert queue_namespace(queue.durable) == "a.b c"
    assert queue_namespace(RECORDER) is None
    assert queue_namespace(events.durable) is None  # another stream's prefix
    # The one shared INVOKE consumer of earlier versions overlaps every queue: provisioning removes it.
    assert (subjects.INVOKE_STREAM, "invoker") in shape.retired_consumers


def test_replicas_come_from_one_setting() -> None:
    shape = topology(Settings(replicas=3))
    assert {s.replicas for s in shape.streams} == {3}
    assert {b.replicas for b in shape.buckets} == {3}
    assert {o.replicas for o in shape.object_stores} == {3}
    assert {s.replicas for s in topology(Settings()).streams} == {1}


def test_every_stream_bucket_and_object_store_has_a_byte_bound() -> None:
    settings = Settings(invoke_max_mb=3, entities_max_mb=5, records_max_mb=2, blobs_max_mb=7)
    shape = topology(settings)
    assert all(s.max_bytes for s in shape.streams)
    assert all(b.max_bytes for b in shape.buckets)
    assert all(o.max_bytes for o in shape.object_stores)
    streams = {s.name: s for s in shape.streams}
    # The work queue refuses new work when full; the histories drop their oldest messages.
    assert streams[subjects.INVOKE_STREAM].discard == "new"
    assert streams[subjects.INVOKE_STREAM].max_bytes == 3 * 1024 * 1024
    assert streams[subjects.TRIGGERS_STREAM].discard == "old"
    assert streams[subjects.ACTIVATIONS_STREAM].discard == "old"
    assert all(s.max_age_s for s in shape.streams if s.retention == "limits")
    assert shape.bucket(subjects.ENTITIES_BUCKET).max_bytes == 5 * 1024 * 1024
    assert shape.bucket(subjects.ENTITIES_BUCKET).ttl_s is None  # entities never age out
    assert shape.bucket(subjects.AUTHKEYS_BUCKET).max_bytes == 2 * 1024 * 1024
