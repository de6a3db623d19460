"""Namespace administration: create, list and delete namespaces, and issue or rotate their keys."""

from __future__ import annotations

import msgspec

from broker import subjects, topology
from broker.clock import now_ms
from broker.entities import validate_name
from broker.entity_store import EntityStore
from broker.errors import Conflict, NotFound
from broker.namespaces import Namespace, NamespaceLimits, key_matches, make_auth_key, split_key


def checked_name(name: str) -> str:
    """A namespace name as OpenWhisk allows it (no `/`, no control characters): a 400 otherwise, before
    anything is read or written under it."""
    return validate_name(name, "namespace name")


async def exists(store: EntityStore, name: str) -> bool:
    checked_name(name)
    try:
        await store.get_namespace(name)
    except NotFound:
        return False
    return True


async def create_namespace(
    store: EntityStore, name: str, *, key: str | None = None, limits: NamespaceLimits | None = None
) -> str:
    """Create a namespace with one key and return that key ("uuid:secret"), which is shown only once."""
    checked_name(name)
    if await exists(store, name):
        raise Conflict(f"namespace '{name}' already exists")
    await store.put_namespace(Namespace(name=name, limits=limits or NamespaceLimits(), created=now_ms()))
    record, plain = make_auth_key(name, key)
    await store.put_key(record)
    return plain


async def ensure_namespace(
    store: EntityStore, name: str, key: str, *, limits: NamespaceLimits | None = None
) -> bool:
    """Make sure `name` exists and accepts `key`; idempotent. Returns True when anything was written.

    `limits` fills in the limits the record leaves to the system; those set on it (by an operator) stay.
    """
    checked_name(name)
    wrote = False
    try:
        current = await store.get_namespace(name)
    except NotFound:
        await store.put_namespace(Namespace(name=name, limits=limits or NamespaceLimits(), created=now_ms()))
        wrote = True
    else:
        filled = fill_limits(current.limits, limits or NamespaceLimits())
        if filled != current.limits:
            await store.put_namespace(msgspec.structs.replace(current, limits=filled))
            wrote = True
    uuid, secret = split_key(key)
    existing = await store.find_key(uuid)
    if existing is None or existing.namespace != name or not key_matches(existing, secret):
        await store.put_key(make_auth_key(name, key)[0])
        wrote = True
    return wrote


def fill_limits(current: NamespaceLimits, fallback: NamespaceLimits) -> NamespaceLimits:
    """`current`, with each limit it leaves to the system taken from `fallback`."""
    own = {field: value for field, value in msgspec.structs.asdict(current).items() if value is not None}
    return msgspec.structs.replace(fallback, **own)


async def rotate_key(store: EntityStore, name: str) -> str:
    """Replace every key of a namespace with a new one; the old keys stop working at once."""
    checked_name(name)
    await store.get_namespace(name)  # NotFound for an unknown namespace
    record, plain = make_auth_key(name)
    await store.put_key(record)
    for old in await store.keys_of(name):
        if old.uuid != record.uuid:
            await store.delete_key(old.uuid)
    return plain


async def delete_namespace(store: EntityStore, name: str) -> None:
    """Delete a namespace with its keys and its data, so that a new namespace of that name starts empty.

    Keys go first (nothing can write there any more), then entities, feed registrations (and fired webhook
    deliveries), its queues and their messages (TRIGGERS, INVOKE), its live records (ACTIVATIONS), its dead letters
    and its published events (EVENTS). Activation records
    in MongoDB are left to the broker's upkeep, which alone deletes records (so the counts stay right): those
    older than a namespace's creation go at its next sweep (broker/activation_upkeep.py), the others by
    retention.
    """
    checked_name(name)
    await store.get_namespace(name)  # NotFound for an unknown namespace
    for old in await store.keys_of(name):
        await store.delete_key(old.uuid)
    await purge_namespace_data(store, name)
    await store.delete_namespace(name)


async def purge_namespace_data(store: EntityStore, name: str) -> None:
    """Remove what `name` holds in NATS (see `delete_namespace`); safe to repeat."""
    bus = store.bus
    await store.delete_all(name)
    await store.purge_keys(subjects.FEEDS_BUCKET, name)
    await store.purge_keys(subjects.FEED_STATUS_BUCKET, name)
    await store.purge_keys(subjects.WEBHOOK_DELIVERIES_BUCKET, name)
    await bus.delete_consumer(subjects.TRIGGERS_STREAM, topology.event_queue(bus.settings, name).durable)
    await bus.delete_consumer(subjects.INVOKE_STREAM, topology.invoke_queue(bus.settings, name, 1).durable)
    await bus.purge(subjects.TRIGGERS_STREAM, subjects.trigger_filter(name))
    await bus.purge(subjects.INVOKE_STREAM, subjects.invoke_filter(name))
    await bus.purge(subjects.ACTIVATIONS_STREAM, subjects.activation_filter(name))
    await bus.purge(subjects.DEADLETTER_STREAM, subjects.deadletter_subject(name))
    # Events published for its NATS feeds (their consumers go with the registrations, feeds/nats_runner.py).
    await bus.purge(subjects.EVENTS_STREAM, subjects.events_prefix(name) + ">")
