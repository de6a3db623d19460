"""Namespace administration: create, list and delete namespaces, and issue or rotate their keys."""

from __future__ import annotations

import msgspec

from broker.clock import now_ms
from broker.entity_store import EntityStore
from broker.errors import Conflict, NotFound
from broker.namespaces import Namespace, NamespaceLimits, key_matches, make_auth_key, split_key


async def exists(store: EntityStore, name: str) -> bool:
    try:
        await store.get_namespace(name)
    except NotFound:
        return False
    return True


async def create_namespace(
    store: EntityStore, name: str, *, key: str | None = None, limits: NamespaceLimits | None = None
) -> str:
    """Create a namespace with one key and return that key ("uuid:secret"), which is shown only once."""
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
    await store.get_namespace(name)  # NotFound for an unknown namespace
    record, plain = make_auth_key(name)
    await store.put_key(record)
    for old in await store.keys_of(name):
        if old.uuid != record.uuid:
            await store.delete_key(old.uuid)
    return plain


async def delete_namespace(store: EntityStore, name: str) -> None:
    await store.get_namespace(name)  # NotFound for an unknown namespace
    for old in await store.keys_of(name):
        await store.delete_key(old.uuid)
    await store.delete_namespace(name)
