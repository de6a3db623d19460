"""The create-or-update and delete steps every entity collection shares, with OpenWhisk's semantics."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from broker.entities import Collection, E, bump_patch
from broker.entity_store import EntityStore
from broker.errors import Conflict, NotFound


async def put_entity(
    store: EntityStore,
    collection: Collection[E],
    namespace: str,
    name: str,
    *,
    overwrite: bool,
    build: Callable[[E | None], E],
) -> E:
    """Create `name`, or replace it when `overwrite` is set; return what was stored.

    `build` receives the current entity (None when creating) and returns the new one; it is a pure
    function, so validation errors happen before anything is written. An update bumps the patch version
    of the stored entity; a concurrent write between our read and our write is a 409 (KV revision).
    """
    try:
        current = await store.get(collection, namespace, name)
    except NotFound:
        current = None
    if current is None:
        return (await store.create(collection, build(None))).entity
    if not overwrite:
        raise Conflict()
    updated = build(current.entity)
    updated = msgspec.structs.replace(updated, version=bump_patch(current.entity.version))
    return (await store.update(collection, updated, current.revision)).entity
