"""Installing the catalog: whisk.system made equal to the catalog, idempotently, by any number of processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from broker import admin, params
from broker.config import Settings
from broker.entities import ACTIONS, PACKAGES, Action, Package, bump_patch
from broker.entity_store import EntityStore
from broker.errors import ConcurrentModification, Conflict, NotFound, WrongCollection
from squall.catalog.manifest import DIGEST_ANNOTATION, CatalogEntity, catalog_entities

log = logging.getLogger("squall.catalog")

# Each round re-reads what is there after losing a race to another installer; two releases writing at
# once could disagree forever, so the rounds are bounded.
MAX_ROUNDS: Final = 5

Op = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Existing:
    """An entity found in the system namespace, and the catalog digest it carries (None: not the catalog's)."""

    collection: str
    path: str
    digest: str | None


@dataclass(frozen=True, slots=True)
class Step:
    op: Op
    collection: str
    path: str
    wanted: CatalogEntity | None = None  # what to write (create, update)


@dataclass(slots=True)
class Installed:
    """What one installation changed, as `collection:path` names."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def plan(wanted: list[CatalogEntity], existing: list[Existing]) -> list[Step]:
    """The writes that make the namespace hold `wanted`: create what is missing, update what differs, delete
    what an earlier catalog installed and this one dropped. Packages are written before their actions and
    deleted after them. Entities the catalog never installed (no digest) are never deleted."""
    found = {(e.collection, e.path): e for e in existing}
    steps: list[Step] = []
    for entity in wanted:
        current = found.get((entity.collection, entity.path))
        if current is None:
            steps.append(Step("create", entity.collection, entity.path, entity))
        elif current.digest != entity.digest:
            steps.append(Step("update", entity.collection, entity.path, entity))
    keep = {(e.collection, e.path) for e in wanted}
    dropped = [e for e in existing if e.digest is not None and (e.collection, e.path) not in keep]
    # Actions first: a package is deleted only once it is empty.
    for collection in (ACTIONS.name, PACKAGES.name):
        steps += [Step("delete", e.collection, e.path) for e in dropped if e.collection == collection]
    return steps


async def ensure_system_namespace(store: EntityStore, name: str) -> bool:
    """Create the system namespace if it is missing, with a key that is stored hashed and shown to no one
    (only the installer writes there); an existing one keeps its keys. Returns True when it was created."""
    if await admin.exists(store, name):
        return False
    try:
        await admin.create_namespace(store, name)  # the plain key it returns is dropped on purpose
    except Conflict:  # another process created it first
        return False
    log.info("created the system namespace %s", name)
    return True


async def install_catalog(store: EntityStore, settings: Settings) -> Installed:
    """Make the system namespace hold the catalog of this release. Cheap when nothing changed (reads only);
    safe to run in several processes at once: a write that loses a race is re-planned from a fresh read."""
    namespace = settings.system_namespace
    await ensure_system_namespace(store, namespace)
    return await install(store, namespace, catalog_entities(namespace))


async def install(store: EntityStore, namespace: str, wanted: list[CatalogEntity]) -> Installed:
    """Make `namespace` hold exactly the catalog entities `wanted` (those of any earlier catalog included)."""
    done = Installed()
    for _ in range(MAX_ROUNDS):
        steps = plan(wanted, await existing_entities(store, namespace))
        if not steps:
            break
        try:
            for step in steps:
                await _apply(store, namespace, step, done)
        except (Conflict, ConcurrentModification, NotFound, WrongCollection) as exc:
            log.debug("catalog: another writer got there first (%s); reading again", exc)
            continue
        break
    else:
        log.warning("catalog: %s did not settle after %d rounds of concurrent writes", namespace, MAX_ROUNDS)
    if done.changed:
        log.info(
            "catalog in %s: %d created, %d updated, %d deleted",
            namespace,
            len(done.created),
            len(done.updated),
            len(done.deleted),
        )
    return done


async def existing_entities(store: EntityStore, namespace: str) -> list[Existing]:
    """The packages of the namespace and the actions inside them, with their catalog digests."""
    found: list[Existing] = []
    for package in await store.list(PACKAGES, namespace):
        found.append(Existing(PACKAGES.name, package.name, _digest(package)))
        if package.binding.is_bound:
            continue
        for action in await store.list_in_package(namespace, package.name):
            found.append(Existing(ACTIONS.name, f"{package.name}/{action.name}", _digest(action)))
    return found


def _digest(entity: Package | Action) -> str | None:
    value = params.lookup(entity.annotations, DIGEST_ANNOTATION)
    return value if isinstance(value, str) else None


async def _apply(store: EntityStore, namespace: str, step: Step, done: Installed) -> None:
    name = f"{step.collection}:{step.path}"
    if step.op == "delete":
        if step.collection == PACKAGES.name and await store.list_in_package(namespace, step.path):
            log.warning("catalog: keeping the dropped package %s, which still holds actions", step.path)
            return
        try:
            if step.collection == PACKAGES.name:
                await store.delete(PACKAGES, namespace, step.path)
            else:
                await store.delete(ACTIONS, namespace, step.path)
        except NotFound:  # deleted by another installer meanwhile: the same outcome
            return
        done.deleted.append(name)
        return
    assert step.wanted is not None
    entity = step.wanted.entity
    if step.op == "create":
        if isinstance(entity, Package):
            await store.create(PACKAGES, entity)
        else:
            await store.create(ACTIONS, entity)
        done.created.append(name)
        return
    # An update is a new version of the entity, as any update through the API is.
    if isinstance(entity, Package):
        current_package = await store.get(PACKAGES, namespace, step.path)
        new_package = msgspec.structs.replace(entity, version=bump_patch(current_package.entity.version))
        await store.update(PACKAGES, new_package, current_package.revision)
    else:
        current_action = await store.get(ACTIONS, namespace, step.path)
        new_action = msgspec.structs.replace(entity, version=bump_patch(current_action.entity.version))
        await store.update(ACTIONS, new_action, current_action.revision)
    done.updated.append(name)
