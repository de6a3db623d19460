"""Routes for rules: list, get, create or update, enable/disable, delete; rule status lives on the trigger.

The writes and their order (a rule and its trigger's link cannot change atomically) are broker/rules.py.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import query_bool, read_json
from api.context import JSON, authenticated, state
from api.listing import LIST_PARAMS, page_of
from api.package_access import not_authorized
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
from broker import rules as rule_writes
from broker.entities import (
    PACKAGES,
    RULE_ACTIVE,
    RULE_INACTIVE,
    RULES,
    FullyQualifiedName,
    split_namespace,
    validate_name,
)
from broker.entitlements import may_use
from broker.entity_store import EntityStore
from broker.errors import Conflict, NotFound
from broker.rule_links import parse_status

COLLECTION_PATH = "/api/v1/namespaces/{namespace}/rules"
ENTITY_PATH = COLLECTION_PATH + "/{name}"
TAG = "Rules"
OVERWRITE = Param(name="overwrite", type="boolean", description="Replace the rule if it exists")


def _target(request: Request, identity: Identity) -> tuple[str, str]:
    namespace = identity.resolve(request.path_params["namespace"])
    return namespace, validate_name(request.path_params["name"])


async def _readable_action(store: EntityStore, namespace: str, ref: FullyQualifiedName) -> bool:
    """Whether the caller may refer to the action: its own, inside another namespace's published package, or
    through a binding of its own to one; never another namespace's binding, even one marked `publish` (reads
    and invokes refuse it too). The engine checks the same again at every run (broker/entitlements.py)."""
    root, package = split_namespace(ref.path)
    if package is None:
        return root == namespace
    found = await rule_writes.find_referenced(store, PACKAGES, FullyQualifiedName(path=root, name=package))
    if found is None:
        return root == namespace  # one's own missing package: the rule names what may come
    pkg = found.entity
    bound = None
    if pkg.binding.is_bound:
        assert isinstance(pkg.binding.namespace, str) and isinstance(pkg.binding.name, str)
        target = FullyQualifiedName(path=pkg.binding.namespace, name=pkg.binding.name)
        stored = await rule_writes.find_referenced(store, PACKAGES, target)
        if stored is None:
            return root == namespace
        bound = stored.entity
    return may_use(namespace, root, pkg, bound)


async def _check_entitled(store: EntityStore, namespace: str, content: RuleContent) -> None:
    """403 for references the caller may not read, named as OpenWhisk names them."""
    denied: list[str] = []
    if content.trigger is not None and split_namespace(content.trigger.path)[0] != namespace:
        denied.append(f"{content.trigger.path}/{content.trigger.name}")
    if content.action is not None and not await _readable_action(store, namespace, content.action):
        denied.append(f"{content.action.path}/{content.action.name}")
    if denied:
        raise not_authorized(", ".join(sorted(set(denied))))


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
    rules = await state(request).store.list(RULES, namespace)
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
    store = state(request).store
    rule = (await store.get(RULES, namespace, name)).entity
    return JSON(view(rule, await rule_writes.status_of(store, rule)))


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
    store = state(request).store
    await _check_entitled(store, namespace, content)
    try:
        current = await store.get(RULES, namespace, name)
    except NotFound:
        created = await rule_writes.create_rule(store, new_rule(content, namespace, name))
        return JSON(view(created, RULE_ACTIVE))
    if not overwrite:
        raise Conflict()
    updated, status = await rule_writes.update_rule(store, current, updated_rule(content, current.entity))
    return JSON(view(updated, status))


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
    await rule_writes.set_rule_status(state(request).store, namespace, name, desired)
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
    deleted = await rule_writes.delete_rule(state(request).store, namespace, name)
    return JSON(view(deleted, RULE_INACTIVE))


routes = [list_rules, get_rule, put_rule, set_rule_status, delete_rule]
