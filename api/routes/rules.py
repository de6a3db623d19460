"""Routes for rules: list, get, create or update, enable/disable, delete; rule status lives on the trigger.

A rule change writes two KV records (the rule, and its trigger's `rules` map), which cannot be atomic. They are
ordered so that an interruption leaves a rule that reads `inactive` and fires nothing, never a trigger that
fires for a rule that no longer points at it:
- create: rule first, then the link (a rule not yet linked reads inactive);
- update to another trigger: unlink the old trigger, write the rule, link the new trigger;
- delete: unlink first, then delete the rule.
Enabling the rule or putting it again repairs an interrupted change. Link writes re-read the trigger and
retry when it changed meanwhile: a link is one key of a map, so re-applying it loses nobody's update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import query_bool, read_json
from api.context import JSON, authenticated, services
from api.listing import LIST_PARAMS, page_of
from api.routing import Operation, Param, route
from api.rule_views import (
    RuleContent,
    RuleCount,
    RuleListItem,
    RulePut,
    RuleStatusBody,
    RuleView,
    list_item,
    new_rule,
    resolve_put,
    updated_rule,
    view,
)
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
    validate_name,
)
from broker.entity_store import EntityStore, Stored
from broker.errors import BadRequest, ConcurrentModification, Conflict, Forbidden, NotFound, WrongCollection
from broker.rule_links import effective_status, key_of, link_of, link_rule, parse_status, unlink

COLLECTION_PATH = "/api/v1/namespaces/{namespace}/rules"
ENTITY_PATH = COLLECTION_PATH + "/{name}"
TAG = "Rules"
OVERWRITE = Param(name="overwrite", type="boolean", description="Replace the rule if it exists")
NO_TRIGGER = "Only rules with existing triggers can be activated"
# A link write retries this often when the trigger keeps changing under it, then answers 409.
_LINK_ATTEMPTS = 5


def _target(request: Request, identity: Identity) -> tuple[str, str]:
    namespace = identity.resolve(request.path_params["namespace"])
    return namespace, validate_name(request.path_params["name"])


async def _find(store: EntityStore, collection: Collection[E], ref: FullyQualifiedName) -> Stored[E] | None:
    root, package = split_namespace(ref.path)
    try:
        return await store.get(collection, root, join_path(package, ref.name))
    except (NotFound, WrongCollection):
        return None


async def _rewrite_trigger(
    store: EntityStore, ref: FullyQualifiedName, change: Callable[[Trigger], Trigger | None]
) -> bool:
    """Apply `change` to the trigger at `ref` under its KV revision; False when there is no such trigger."""
    for _ in range(_LINK_ATTEMPTS):
        stored = await _find(store, TRIGGERS, ref)
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


async def _readable_action(store: EntityStore, namespace: str, ref: FullyQualifiedName) -> bool:
    """Whether the caller may refer to the action: its own, or inside another namespace's public package."""
    root, package = split_namespace(ref.path)
    if root == namespace:
        return True
    if package is None:
        return False
    found = await _find(store, PACKAGES, FullyQualifiedName(path=root, name=package))
    return found is not None and found.entity.publish


async def _check_entitled(store: EntityStore, namespace: str, content: RuleContent) -> None:
    """403 for references the caller may not read, named as OpenWhisk names them."""
    denied: list[str] = []
    if content.trigger is not None and split_namespace(content.trigger.path)[0] != namespace:
        denied.append(f"{content.trigger.path}/{content.trigger.name}")
    if content.action is not None and not await _readable_action(store, namespace, content.action):
        denied.append(f"{content.action.path}/{content.action.name}")
    if denied:
        names = ", ".join(sorted(set(denied)))
        raise Forbidden(f"The supplied authentication is not authorized to access '{names}'.")


async def _action_exists(store: EntityStore, ref: FullyQualifiedName) -> bool:
    """Whether `ref` names an action, looking through a package binding to the package it binds."""
    root, package = split_namespace(ref.path)
    if package is not None:
        found = await _find(store, PACKAGES, FullyQualifiedName(path=root, name=package))
        if found is None:
            return False
        binding = found.entity.binding
        if isinstance(binding.namespace, str) and isinstance(binding.name, str):
            root, package = binding.namespace, binding.name
    path = root if package is None else f"{root}/{package}"
    return await _find(store, ACTIONS, FullyQualifiedName(path=path, name=ref.name)) is not None


async def _check_exist(store: EntityStore, trigger: FullyQualifiedName, action: FullyQualifiedName) -> None:
    """400 unless both references resolve, with OpenWhisk's messages (trigger first)."""
    if await _find(store, TRIGGERS, trigger) is None:
        raise BadRequest(f"trigger {trigger} does not exist")
    if not await _action_exists(store, action):
        raise BadRequest(f"action {action} does not exist")


@route(
    COLLECTION_PATH,
    "GET",
    Operation(
        summary="List the rules of a namespace, most recently updated first",
        tag=TAG,
        query=LIST_PARAMS,
        response=list[RuleListItem] | RuleCount,
    ),
)
@authenticated
async def list_rules(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    page = page_of(request)
    rules = await services(request).store.list(RULES, namespace)
    if page.count:
        return JSON(RuleCount(rules=max(0, len(rules) - page.skip)))
    return JSON([list_item(r) for r in page.slice(rules)])


@route(
    ENTITY_PATH,
    "GET",
    Operation(summary="Get a rule and its status", tag=TAG, response=RuleView, errors=(400, 404)),
)
@authenticated
async def get_rule(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    store = services(request).store
    rule = (await store.get(RULES, namespace, name)).entity
    trigger = await _find(store, TRIGGERS, rule.trigger)
    return JSON(view(rule, effective_status(rule, trigger.entity if trigger else None)))


@route(
    ENTITY_PATH,
    "PUT",
    Operation(
        summary=(
            "Create a rule (active), or update it with `overwrite=true` (keeping its status); "
            "an optional `filter` and `retry` policy are Squall's, and `null` removes them"
        ),
        tag=TAG,
        query=(OVERWRITE,),
        body=RulePut,
        response=RuleView,
        errors=(400, 403, 409, 413),
    ),
)
@authenticated
async def put_rule(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    overwrite = query_bool(request, "overwrite")
    content = resolve_put(await read_json(request, RulePut), namespace)
    store = services(request).store
    await _check_entitled(store, namespace, content)
    try:
        current = await store.get(RULES, namespace, name)
    except NotFound:
        return JSON(await _create(store, content, namespace, name))
    if not overwrite:
        raise Conflict()
    return JSON(await _update(store, content, current))


async def _create(store: EntityStore, content: RuleContent, namespace: str, name: str) -> RuleView:
    rule = new_rule(content, namespace, name)
    await _check_exist(store, rule.trigger, rule.action)
    stored = await store.create(RULES, rule)
    try:
        linked = await _rewrite_trigger(store, rule.trigger, lambda t: link_rule(t, rule, RULE_ACTIVE))
    except Exception:
        # The rule reads inactive without its link; remove it so the failed PUT leaves nothing behind.
        with contextlib.suppress(Exception):
            await store.delete(RULES, namespace, name, stored.revision)
        raise
    if not linked:  # the trigger was deleted between our check and our link
        with contextlib.suppress(Exception):
            await store.delete(RULES, namespace, name, stored.revision)
        raise BadRequest(f"trigger {rule.trigger} does not exist")
    return view(stored.entity, RULE_ACTIVE)


async def _update(store: EntityStore, content: RuleContent, current: Stored[Rule]) -> RuleView:
    old = current.entity
    old_trigger = await _find(store, TRIGGERS, old.trigger)
    status = effective_status(old, old_trigger.entity if old_trigger else None)
    rule = updated_rule(content, old)
    rule = msgspec.structs.replace(rule, version=bump_patch(old.version), status=status)
    await _check_exist(store, rule.trigger, rule.action)
    key = key_of(rule)
    if rule.trigger != old.trigger:
        await _rewrite_trigger(store, old.trigger, lambda t: unlink(t, key))
    stored = await store.update(RULES, rule, current.revision)
    # The link carries the filter and retry policy too, so an update of those alone rewrites it.
    if not await _rewrite_trigger(store, rule.trigger, lambda t: link_rule(t, rule, status)):
        status = RULE_INACTIVE  # the new trigger was deleted meanwhile: the rule reads inactive
    return view(stored.entity, status)


@route(
    ENTITY_PATH,
    "POST",
    Operation(
        summary='Enable or disable a rule: body `{"status": "active" | "inactive"}`, empty 200 answer',
        tag=TAG,
        body=RuleStatusBody,
        body_required=True,
        response=None,
        errors=(400, 404, 409),
    ),
)
@authenticated
async def set_rule_status(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    desired = parse_status((await read_json(request, RuleStatusBody)).status)
    store = services(request).store
    rule = (await store.get(RULES, namespace, name)).entity
    key = key_of(rule)
    trigger = await _find(store, TRIGGERS, rule.trigger)
    if desired == RULE_INACTIVE and (trigger is None or link_of(trigger.entity, key) is None):
        return Response(status_code=200)  # nothing records it as active: already inactive
    if trigger is None:
        raise NotFound(NO_TRIGGER)
    # Writing the link also repairs one an interrupted update left pointing at an older action (or filter).
    linked = await _rewrite_trigger(store, rule.trigger, lambda t: link_rule(t, rule, desired))
    if not linked and desired == RULE_ACTIVE:
        raise NotFound(NO_TRIGGER)
    return Response(status_code=200)


@route(
    ENTITY_PATH,
    "DELETE",
    Operation(
        summary="Delete a rule; the answer shows it inactive",
        tag=TAG,
        response=RuleView,
        errors=(400, 404, 409),
    ),
)
@authenticated
async def delete_rule(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    store = services(request).store
    current = await store.get(RULES, namespace, name)
    rule = current.entity
    key = key_of(rule)
    await _rewrite_trigger(store, rule.trigger, lambda t: unlink(t, key))
    deleted = await store.delete(RULES, namespace, name, current.revision)
    return JSON(view(deleted, RULE_INACTIVE))


routes = [list_rules, get_rule, put_rule, set_rule_status, delete_rule]
