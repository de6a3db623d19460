"""Writing a rule and its trigger's link to it, in an order that no interruption can turn into a wrong fire.

A rule change writes two KV records (the rule, and its trigger's `rules` map), which cannot be atomic. They are
ordered so that an interruption leaves a rule that reads `inactive` and fires nothing, never a trigger that
fires for a rule that no longer points at it:
- create: rule first, then the link (a rule not yet linked reads inactive);
- update to another trigger: unlink the old trigger, write the rule, link the new trigger;
- delete: unlink first, then delete the rule.
Enabling the rule or putting it again repairs an interrupted change. Link writes re-read the trigger and
retry when it changed meanwhile: a link is one key of a map, so re-applying it loses nobody's update.
The pure part (what a link says, a rule's effective status) is broker/rule_links.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

import msgspec

from broker.entities import (
    ACTIONS,
    PACKAGES,
    RULE_ACTIVE,
    RULE_INACTIVE,
    RULES,
    TRIGGERS,
    Collection,
    E,
    FullyQualifiedName,
    Rule,
    Trigger,
    bump_patch,
    join_path,
    split_namespace,
)
from broker.entity_store import EntityStore, Stored
from broker.errors import BadRequest, ConcurrentModification, NotFound, WrongCollection
from broker.rule_links import effective_status, key_of, link_of, link_rule, unlink

NO_TRIGGER: Final = "Only rules with existing triggers can be activated"
# A link write retries this often when the trigger keeps changing under it, then answers 409.
LINK_ATTEMPTS: Final = 5


async def find_referenced(
    store: EntityStore, collection: Collection[E], ref: FullyQualifiedName
) -> Stored[E] | None:
    """The entity a rule's `{path, name}` reference names, or None when there is none (of that kind)."""
    root, package = split_namespace(ref.path)
    try:
        return await store.get(collection, root, join_path(package, ref.name))
    except (NotFound, WrongCollection):
        return None


async def rewrite_trigger(
    store: EntityStore, ref: FullyQualifiedName, change: Callable[[Trigger], Trigger | None]
) -> bool:
    """Apply `change` to the trigger at `ref` under its KV revision; False when there is no such trigger."""
    for _ in range(LINK_ATTEMPTS):
        stored = await find_referenced(store, TRIGGERS, ref)
        if stored is None:
            return False
        changed = change(stored.entity)
        if changed is None:
            return True
        try:
            await store.update(TRIGGERS, changed, stored.revision)
        except ConcurrentModification:
            continue  # someone else changed the trigger: re-read it and apply our change again
        return True
    raise ConcurrentModification()


async def status_of(store: EntityStore, rule: Rule) -> str:
    """The status `rule` reads as: what its trigger records, `inactive` when nothing does."""
    trigger = await find_referenced(store, TRIGGERS, rule.trigger)
    return effective_status(rule, trigger.entity if trigger else None)


async def _action_exists(store: EntityStore, ref: FullyQualifiedName) -> bool:
    """Whether `ref` names an action, looking through a package binding to the package it binds."""
    root, package = split_namespace(ref.path)
    if package is not None:
        found = await find_referenced(store, PACKAGES, FullyQualifiedName(path=root, name=package))
        if found is None:
            return False
        binding = found.entity.binding
        if isinstance(binding.namespace, str) and isinstance(binding.name, str):
            root, package = binding.namespace, binding.name
    path = root if package is None else f"{root}/{package}"
    return await find_referenced(store, ACTIONS, FullyQualifiedName(path=path, name=ref.name)) is not None


async def _check_exist(store: EntityStore, trigger: FullyQualifiedName, action: FullyQualifiedName) -> None:
    """400 unless both references resolve, with OpenWhisk's messages (trigger first)."""
    if await find_referenced(store, TRIGGERS, trigger) is None:
        raise BadRequest(f"trigger {trigger} does not exist")
    if not await _action_exists(store, action):
        raise BadRequest(f"action {action} does not exist")


async def create_rule(store: EntityStore, rule: Rule) -> Rule:
    """Write a new rule, then link it (active) on its trigger; the stored rule."""
    await _check_exist(store, rule.trigger, rule.action)
    stored = await store.create(RULES, rule)
    try:
        linked = await rewrite_trigger(store, rule.trigger, lambda t: link_rule(t, rule, RULE_ACTIVE))
    except Exception:
        # The rule reads inactive without its link; remove it so the failed PUT leaves nothing behind.
        with contextlib.suppress(Exception):
            await store.delete(RULES, rule.namespace, rule.name, stored.revision)
        raise
    if not linked:  # the trigger was deleted between our check and our link
        with contextlib.suppress(Exception):
            await store.delete(RULES, rule.namespace, rule.name, stored.revision)
        raise BadRequest(f"trigger {rule.trigger} does not exist")
    return stored.entity


async def update_rule(store: EntityStore, current: Stored[Rule], rule: Rule) -> tuple[Rule, str]:
    """Replace `current` with `rule`, keeping the status it reads as, and move or rewrite its link;
    the stored rule and its status."""
    old = current.entity
    status = await status_of(store, old)
    rule = msgspec.structs.replace(rule, version=bump_patch(old.version), status=status)
    await _check_exist(store, rule.trigger, rule.action)
    key = key_of(rule)
    if rule.trigger != old.trigger:
        await rewrite_trigger(store, old.trigger, lambda t: unlink(t, key))
    stored = await store.update(RULES, rule, current.revision)
    # The link carries the filter and retry policy too, so an update of those alone rewrites it.
    if not await rewrite_trigger(store, rule.trigger, lambda t: link_rule(t, rule, status)):
        status = RULE_INACTIVE  # the new trigger was deleted meanwhile: the rule reads inactive
    return stored.entity, status


async def set_rule_status(store: EntityStore, namespace: str, name: str, desired: str) -> None:
    """Enable or disable a rule by writing its link; 404 when enabling a rule whose trigger is gone."""
    rule = (await store.get(RULES, namespace, name)).entity
    key = key_of(rule)
    trigger = await find_referenced(store, TRIGGERS, rule.trigger)
    if desired == RULE_INACTIVE and (trigger is None or link_of(trigger.entity, key) is None):
        return  # nothing records it as active: already inactive
    if trigger is None:
        raise NotFound(NO_TRIGGER)
    # Writing the link also repairs one an interrupted update left pointing at an older action (or filter).
    linked = await rewrite_trigger(store, rule.trigger, lambda t: link_rule(t, rule, desired))
    if not linked and desired == RULE_ACTIVE:
        raise NotFound(NO_TRIGGER)


async def delete_rule(store: EntityStore, namespace: str, name: str) -> Rule:
    """Unlink a rule from its trigger, then delete it; the deleted rule."""
    current = await store.get(RULES, namespace, name)
    rule = current.entity
    key = key_of(rule)
    await rewrite_trigger(store, rule.trigger, lambda t: unlink(t, key))
    return await store.delete(RULES, namespace, name, current.revision)
