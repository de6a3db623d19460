"""The backbone's shape as data: every stream, KV bucket, object store and durable consumer, with its bounds.

`JetStreamBus.provision()` applies this idempotently at start; nothing else creates a stream, bucket or
consumer. Names and subjects come from broker/subjects.py; this module adds the policies (retention, ages,
ack waits, delivery limits, replicas), so a newcomer finds every one of them in one place.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from broker import subjects
from broker.config import Settings

MB: Final = 1024 * 1024

DUPLICATE_WINDOW_S: Final = (
    120.0  # how long a Nats-Msg-Id is remembered: retried fires within it create nothing
)

# Durable consumers.
RECORDER: Final = "recorder"
# TRIGGERS and INVOKE have one durable consumer per namespace, shared by every engine (`event_queue`) and
# every invoker (`invoke_queue`): one namespace's backlog waits in its own queue, never in front of another's.
EVENT_QUEUE_PREFIX: Final = "events-"
INVOKE_QUEUE_PREFIX: Final = "queue-"
# The one engine consumer of TRIGGERS of earlier versions: read until drained, then removed (rule_engine.py).
LEGACY_RULE_ENGINE: Final = "rule-engine"

# Live activation streams read ACTIVATIONS through ephemeral consumers (broker/activation_tail.py): in memory,
# unacknowledged, one per namespace with open streams in each API process (broker/activation_fanout.py) plus one
# per stream while it catches up, and removed by the server this long after their reader stopped pulling, so an
# API that crashed leaves none behind.
STREAM_READER_INACTIVE_S: Final = 30.0

# Deliveries of one message before its handler gives up and records the failure instead of trying again.
MAX_DELIVERIES: Final = 5
# A heartbeat nobody refreshed for this long is forgotten (the invoker disappears from `GET /invokers`).
INVOKERS_FORGET_AFTER_S: Final = 600.0
INVOKERS_BUCKET: Final = "squall_invokers"
FEEDS_MEMBERS_FORGET_AFTER_S: Final = 60.0

Retention = Literal["limits", "work-queue"]
# What a full stream does: drop its oldest messages ("old": a history, whose oldest part matters least) or
# refuse the new one ("new": a queue of work, where dropping would lose accepted work silently).
Discard = Literal["old", "new"]
DeliverFrom = Literal["all", "new"]


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subjects: tuple[str, ...]
    retention: Retention = "limits"
    max_age_s: float | None = None  # None: kept until consumed (work queue) or removed by hand
    max_bytes: int | None = None
    discard: Discard = "old"
    replicas: int = 1
    duplicate_window_s: float = DUPLICATE_WINDOW_S


class BucketSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A KV bucket (one value per key; a full bucket refuses writes, JetStream's discard-new for KV)."""

    name: str
    ttl_s: float | None = None
    max_bytes: int | None = None
    replicas: int = 1


class ObjectStoreSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    max_age_s: float | None = None
    max_bytes: int | None = None  # full: a put fails (JetStream's discard-new for object stores)
    replicas: int = 1


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A durable pull consumer.

    `max_deliveries` is the handler's give-up point, not JetStream's `max_deliver` (which stays unlimited):
    a message JetStream stopped delivering could not be recorded as failed, it would only vanish.
    """

    stream: str
    durable: str
    filter_subject: str | None = None
    deliver: DeliverFrom = "all"
    # Deliver what was stored from this instant on (epoch ms) instead: a consumer made some time after the
    # thing it serves (a NATS feed's, after its CREATE) still sees every message since.
    deliver_since_ms: int | None = None
    ack_wait_s: float = 30.0
    max_deliveries: int = MAX_DELIVERIES
    max_ack_pending: int = -1  # -1: unbounded; each worker bounds its own in-flight work
    max_waiting: int = 512  # open pull requests, one per worker process at a time


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    streams: tuple[StreamSpec, ...]
    buckets: tuple[BucketSpec, ...]
    object_stores: tuple[ObjectStoreSpec, ...]
    consumers: tuple[ConsumerSpec, ...]
    # (stream, durable) of consumers earlier versions made that must go: e.g. the one shared INVOKE consumer,
    # which the per-namespace queues cannot coexist with (a work queue's consumers may not overlap).
    retired_consumers: tuple[tuple[str, str], ...] = ()

    def consumer(self, durable: str) -> ConsumerSpec:
        return next(spec for spec in self.consumers if spec.durable == durable)

    def bucket(self, name: str) -> BucketSpec:
        return next(spec for spec in self.buckets if spec.name == name)


def topology(settings: Settings) -> Topology:
    """Squall's streams, buckets and consumers (DESIGN.md § State) for these settings."""
    replicas = settings.replicas
    history_age = settings.stream_max_age_days * 86400.0
    records = settings.records_max_mb * MB
    return Topology(
        streams=(
            # The event history that replay and dry runs read: kept by age.
            StreamSpec(
                name=subjects.TRIGGERS_STREAM,
                subjects=(subjects.TRIGGERS_SUBJECTS,),
                max_age_s=history_age,
                max_bytes=settings.triggers_max_mb * MB,
                replicas=replicas,
                # An alarm instant is fired again by the process that takes the alarm over (up to
                # feeds_takeover_s late): its first fire must still be remembered then.
                duplicate_window_s=max(DUPLICATE_WINDOW_S, 4 * settings.feeds_takeover_s),
            ),
            # Work: a message lives until an invoker acknowledges it. Full, it refuses new runs (a 503 to
            # whoever publishes one) instead of dropping accepted ones.
            StreamSpec(
                name=subjects.INVOKE_STREAM,
                subjects=(subjects.INVOKE_SUBJECTS,),
                retention="work-queue",
                max_bytes=settings.invoke_max_mb * MB,
                discard="new",
                replicas=replicas,
            ),
            # The live and resumable record stream, feeding MongoDB.
            StreamSpec(
                name=subjects.ACTIVATIONS_STREAM,
                subjects=(subjects.ACTIVATIONS_SUBJECTS,),
                max_age_s=history_age,
                max_bytes=settings.activations_max_mb * MB,
                replicas=replicas,
            ),
            # Events services publish for the NATS-subject feeds (`events.<ns>.…`): each feed's consumer reads
            # them; bounded by age and size, the oldest dropped first, so a feed paused for long loses the oldest.
            StreamSpec(
                name=subjects.EVENTS_STREAM,
                subjects=(subjects.EVENTS_SUBJECTS,),
                max_age_s=settings.events_max_age_hours * 3600.0,
                max_bytes=settings.events_max_mb * 1024 * 1024,
                replicas=replicas,
            ),
            # Dead letters wait for a human, for a while: they age out, and the oldest go first when full
            # (broker/dead_letters.py also keeps each namespace within its own quota).
            StreamSpec(
                name=subjects.DEADLETTER_STREAM,
                subjects=(subjects.DEADLETTER_SUBJECTS,),
                max_age_s=settings.deadletter_max_age_days * 86400.0,
                max_bytes=settings.deadletters_max_mb * MB,
                replicas=replicas,
            ),
        ),
        buckets=(
            # Buckets keep one revision per key and never age (an entity or a key must not expire): their
            # bound is bytes, past which a write is refused (503).
            BucketSpec(
                name=subjects.ENTITIES_BUCKET, max_bytes=settings.entities_max_mb * MB, replicas=replicas
            ),
            BucketSpec(name=subjects.NAMESPACES_BUCKET, max_bytes=records, replicas=replicas),
            BucketSpec(name=subjects.AUTHKEYS_BUCKET, max_bytes=records, replicas=replicas),
            BucketSpec(
                name=INVOKERS_BUCKET, ttl_s=INVOKERS_FORGET_AFTER_S, max_bytes=records, replicas=replicas
            ),
            BucketSpec(name=subjects.FEEDS_BUCKET, max_bytes=records, replicas=replicas),
            BucketSpec(name=subjects.FEED_STATUS_BUCKET, max_bytes=records, replicas=replicas),
            # Fired webhook deliveries: the marks expire once no sender would retry any more.
            BucketSpec(
                name=subjects.WEBHOOK_DELIVERIES_BUCKET,
                ttl_s=settings.webhook_replay_window_s,
                max_bytes=records,
                replicas=replicas,
            ),
            # Heartbeats of the live feeds processes: liveness is decided from their age (feeds/membership.py);
            # the TTL only clears the keys of processes that died long ago.
            BucketSpec(
                name=subjects.FEEDS_MEMBERS_BUCKET,
                ttl_s=FEEDS_MEMBERS_FORGET_AFTER_S,
                max_bytes=records,
                replicas=replicas,
            ),
        ),
        object_stores=(
            # Action code: kept while an entity points at it, so bounded by bytes only.
            ObjectStoreSpec(
                name=subjects.BLOBS_BUCKET, max_bytes=settings.blobs_max_mb * MB, replicas=replicas
            ),
            # Records too large for one message, until the recorder has them in MongoDB (it then deletes
            # them): they live no longer than the stubs on ACTIVATIONS that point at them, and a backlog of
            # them cannot take more than its bound of the server's disk.
            ObjectStoreSpec(
                name=subjects.LARGE_RECORDS_BUCKET,
                max_age_s=history_age,
                max_bytes=settings.large_records_max_mb * MB,
                replicas=replicas,
            ),
        ),
        consumers=(
            ConsumerSpec(
                stream=subjects.ACTIVATIONS_STREAM,
                durable=RECORDER,
                ack_wait_s=settings.broker_ack_wait_s,
            ),
        ),
        retired_consumers=((subjects.INVOKE_STREAM, "invoker"),),
    )


def event_queue(settings: Settings, namespace: str) -> ConsumerSpec:
    """A namespace's trigger events on TRIGGERS, for the rule engine. New events only: the stream is also the
    event history, which must not be replayed; every publisher makes the queue before its first event."""
    return ConsumerSpec(
        stream=subjects.TRIGGERS_STREAM,
        durable=f"{EVENT_QUEUE_PREFIX}{subjects.token(namespace)}",
        filter_subject=subjects.trigger_filter(namespace),
        deliver="new",
        ack_wait_s=settings.broker_ack_wait_s,
    )


def legacy_rule_engine(settings: Settings) -> ConsumerSpec:
    return ConsumerSpec(
        stream=subjects.TRIGGERS_STREAM,
        durable=LEGACY_RULE_ENGINE,
        deliver="new",
        ack_wait_s=settings.broker_ack_wait_s,
    )


def invoke_queue(settings: Settings, namespace: str, max_running: int) -> ConsumerSpec:
    """A namespace's queue on INVOKE: the runs it caused, in order, shared by every invoker.

    JetStream delivers at most `max_running` of them unacknowledged (the namespace's concurrentInvocations):
    the rest wait in the stream, durably, until a run ends. So an event-driven run over the limit waits instead
    of being refused, and one namespace's backlog sits in its own queue, never ahead of another's events.
    """
    return ConsumerSpec(
        stream=subjects.INVOKE_STREAM,
        durable=f"{INVOKE_QUEUE_PREFIX}{subjects.token(namespace)}",
        filter_subject=subjects.invoke_filter(namespace),
        ack_wait_s=settings.invoker_ack_wait_s,
        max_ack_pending=max(1, max_running),
    )


def queue_namespace(durable: str, prefix: str = INVOKE_QUEUE_PREFIX) -> str | None:
    """The namespace of a per-namespace queue's consumer name (None for another consumer)."""
    if not durable.startswith(prefix):
        return None
    return subjects.untoken(durable.removeprefix(prefix))
