"""Actions: CRUD of code actions and sequences, in the default package or a named one (invoking: routes/invoke.py)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import query_bool, read_json
from api.context import JSON, authenticated, state
from api.crud import put_entity
from api.entity_views import (
    ActionPut,
    ActionSummary,
    ExecPut,
    action_summary,
    code_exec,
    exec_size,
    new_action,
    parse_component,
    sequence_components,
    sequence_exec,
    updated_action,
    without_code,
)
from api.listing import LIST_PARAMS, page_of
from api.package_access import not_authorized, resolve_package
from api.routing import Operation, Param, route
from broker import kinds, limits, params
from broker.entities import (
    ACTIONS,
    PACKAGES,
    Action,
    Exec,
    FullyQualifiedName,
    join_path,
    split_namespace,
    split_path,
)
from broker.entity_store import EntityStore
from broker.errors import BadRequest, NotFound, WrongCollection

NOT_ALLOWED_ON_BINDING = "Operation not permitted on package binding."
SEQUENCE_TOO_LONG = "Too many actions in the sequence."
SEQUENCE_NO_COMPONENT = "No component specified for the sequence."
SEQUENCE_CYCLIC = "Sequence may not refer to itself."
SEQUENCE_COMPONENT_NOT_FOUND = "Sequence component does not exist."

_COLLECTION = "/api/v1/namespaces/{namespace}/actions"
_ENTITY = _COLLECTION + "/{name:path}"
_LISTING = list[ActionSummary] | dict[str, int]


def _listing(request: Request, found: list[Action]) -> Response:
    page = page_of(request)
    if page.count:
        return JSON({"actions": max(0, len(found) - page.skip)})
    return JSON([action_summary(a) for a in page.slice(found)])


def _entity_path(request: Request) -> tuple[str | None, str]:
    """`name` or `pkg/name` from the path, validated."""
    # Paths with control characters (`a%0A`) never get here: the outer middleware refuses them.
    return split_path(request.path_params["name"])


async def _writable_package(store: EntityStore, namespace: str, package: str) -> None:
    """Actions are written only into an existing package of one's own, never through a binding."""
    current = (await store.get(PACKAGES, namespace, package)).entity  # 404 when missing, as OpenWhisk
    if current.binding.is_bound:
        raise BadRequest(NOT_ALLOWED_ON_BINDING)


@route(
    _COLLECTION,
    "GET",
    Operation(
        summary="List the actions of the default package", tag="Actions", query=LIST_PARAMS, response=_LISTING
    ),
)
@authenticated
async def list_actions(request: Request, identity: Identity) -> Response:
    return await _list_default_package(request, identity)


async def _list_default_package(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    return _listing(request, await state(request).store.list(ACTIONS, namespace))


@route(
    # A path convertor, not `{package}`: Starlette's `redirect_slashes` would otherwise turn a PUT on a
    # name with a newline into a redirect to this GET-only route (a 405 instead of a 404).
    _COLLECTION + "/{package:path}/",
    "GET",
    Operation(
        summary="List the actions of a package (of the bound package, for a binding)",
        tag="Actions",
        query=LIST_PARAMS,
        response=_LISTING,
        errors=(400, 404),
    ),
)
@authenticated
async def list_package_actions(request: Request, identity: Identity) -> Response:
    store = state(request).store
    resolved = await resolve_package(
        store, identity, request.path_params["namespace"], request.path_params["package"]
    )
    pkg = resolved.package
    return _listing(request, await store.list_in_package(pkg.namespace, pkg.name))


@route(
    _ENTITY,
    "GET",
    Operation(
        summary="Get an action; a packaged one shows its package's parameters merged in",
        tag="Actions",
        query=(Param(name="code", type="boolean", description="Include exec.code (default true)"),),
        response=Action,
        errors=(400, 404),
    ),
)
@authenticated
async def get_action(request: Request, identity: Identity) -> Response:
    if request.path_params["name"] == "":  # `…/actions/` is the collection
        return await _list_default_package(request, identity)
    package, name = _entity_path(request)
    code = query_bool(request, "code", default=True)
    store = state(request).store
    if package is None:
        action = (await store.get(ACTIONS, identity.resolve(request.path_params["namespace"]), name)).entity
    else:
        resolved = await resolve_package(store, identity, request.path_params["namespace"], package)
        pkg = resolved.package
        action = (await store.get(ACTIONS, pkg.namespace, f"{pkg.name}/{name}")).entity
        # OpenWhisk shows a packaged action with package < binding < action parameters.
        action = msgspec.structs.replace(
            action, parameters=params.merge(resolved.parameters, action.parameters)
        )
    return JSON(action if code else without_code(action))


@route(
    _ENTITY,
    "PUT",
    Operation(
        summary="Create or update an action (code or sequence)",
        tag="Actions",
        query=(Param(name="overwrite", type="boolean", description="Replace an existing action"),),
        body=ActionPut,
        response=Action,
        errors=(400, 404, 409, 413),
    ),
)
@authenticated
async def put_action(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    package, name = _entity_path(request)
    store = state(request).store
    if package is not None:
        await _writable_package(store, namespace, package)
    put = await read_json(request, ActionPut)
    entity_namespace = namespace if package is None else f"{namespace}/{package}"
    exec = await _requested_exec(store, identity, put, FullyQualifiedName(path=entity_namespace, name=name))
    limits.check_entity_sizes(
        exec_size=exec_size(exec) if exec is not None else 0,
        parameters=params.normalize(put.parameters) if isinstance(put.parameters, list) else None,
        annotations=params.normalize(put.annotations) if isinstance(put.annotations, list) else None,
    )
    stored = await put_entity(
        store,
        ACTIONS,
        namespace,
        join_path(package, name),
        overwrite=query_bool(request, "overwrite"),
        build=lambda current: (
            new_action(put, namespace=entity_namespace, name=name, exec=exec)
            if current is None
            else updated_action(put, current, exec)
        ),
    )
    return JSON(stored)


@route(
    _ENTITY,
    "DELETE",
    Operation(summary="Delete an action", tag="Actions", response=Action, errors=(400, 404, 409)),
)
@authenticated
async def delete_action(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    package, name = _entity_path(request)
    store = state(request).store
    if package is not None:
        await _writable_package(store, namespace, package)
    return JSON(await store.delete(ACTIONS, namespace, join_path(package, name)))


# -- sequences --------------------------------------------------------------------------------------------


async def _requested_exec(
    store: EntityStore, identity: Identity, put: ActionPut, action: FullyQualifiedName
) -> Exec | None:
    """The body's exec resolved to what is stored; a sequence's components are checked to exist."""
    if not isinstance(put.exec, ExecPut):
        return None
    if kinds.normalize_kind(put.exec.kind) != kinds.SEQUENCE:
        return code_exec(put.exec)
    root, _ = split_namespace(action.path)
    components = sequence_components(put.exec, root)
    if len(components) > limits.SEQUENCE_MAX_LENGTH:
        raise BadRequest(SEQUENCE_TOO_LONG)
    if not components:
        raise BadRequest(SEQUENCE_NO_COMPONENT)
    for component in components:
        await _entitle(store, identity, component)
    if await _count_atomic(store, action, components, depth=0) > limits.SEQUENCE_MAX_LENGTH:
        raise BadRequest(SEQUENCE_TOO_LONG)
    return sequence_exec(components)


async def _entitle(store: EntityStore, identity: Identity, component: FullyQualifiedName) -> None:
    """The caller must be able to read each component: its own, or in a package published to it."""
    root, package = split_namespace(component.path)
    if package is not None:
        await resolve_package(store, identity, root, package)
    elif root != identity.namespace:
        raise not_authorized(f"{root}/{component.name}")


async def _locate(store: EntityStore, component: FullyQualifiedName) -> FullyQualifiedName:
    """Where a component really lives: a name through a binding is the bound package's action."""
    root, package = split_namespace(component.path)
    if package is None:
        return component
    try:
        pkg = (await store.get(PACKAGES, root, package)).entity
    except (NotFound, WrongCollection):
        raise BadRequest(SEQUENCE_COMPONENT_NOT_FOUND) from None
    if pkg.binding.is_bound:
        return FullyQualifiedName(path=f"{pkg.binding.namespace}/{pkg.binding.name}", name=component.name)
    return component


async def _count_atomic(
    store: EntityStore, sequence: FullyQualifiedName, components: list[FullyQualifiedName], depth: int
) -> int:
    """The number of code actions the sequence runs with nested sequences inlined; refuses a cycle."""
    if depth > limits.SEQUENCE_MAX_LENGTH:  # only a cycle not through `sequence` gets this deep
        raise BadRequest(SEQUENCE_TOO_LONG)
    total = 0
    for component in components:
        where = await _locate(store, component)
        if where == sequence:
            raise BadRequest(SEQUENCE_CYCLIC)
        root, package = split_namespace(where.path)
        try:
            found = (await store.get(ACTIONS, root, join_path(package, where.name))).entity
        except (NotFound, WrongCollection):
            raise BadRequest(SEQUENCE_COMPONENT_NOT_FOUND) from None
        if found.exec.kind == kinds.SEQUENCE:
            nested = [parse_component(ref, root) for ref in found.exec.components or []]
            total += await _count_atomic(store, sequence, nested, depth + 1)
        else:
            total += 1
        if total > limits.SEQUENCE_MAX_LENGTH:
            break
    return total


routes = [list_actions, list_package_actions, get_action, put_action, delete_action]
