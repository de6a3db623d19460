"""Packages and bindings: CRUD, `force` delete, and reads of packages other namespaces published."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import query_bool, read_json
from api.context import JSON, authenticated, state
from api.crud import put_entity
from api.entity_views import (
    PackagePut,
    PackageSummary,
    PackageWithActions,
    new_package,
    package_summary,
    package_view,
    requested_binding,
    updated_package,
)
from api.listing import LIST_PARAMS, page_of
from api.package_access import check_binding_target, resolve_package
from api.routing import Operation, Param, route
from broker import limits, params
from broker.entities import ACTIONS, PACKAGES, Package, validate_name
from broker.errors import BadRequest, Conflict

RESERVED_NAMES = frozenset({"default"})

_ENTITY = "/api/v1/namespaces/{namespace}/packages/{name}"


def not_empty_message(count: int) -> str:
    noun = "entity" if count == 1 else "entities"
    return f"Package not empty (contains {count} {noun}). Set force param or delete package contents."


@route(
    "/api/v1/namespaces/{namespace}/packages",
    "GET",
    Operation(
        summary="List packages; another namespace shows only its published packages",
        tag="Packages",
        query=LIST_PARAMS,
        response=list[PackageSummary] | dict[str, int],
    ),
)
@authenticated
async def list_packages(request: Request, identity: Identity) -> Response:
    namespace, owner = identity.resolve_for_read(request.path_params["namespace"])
    page = page_of(request)
    found = await state(request).store.list(PACKAGES, namespace)
    if not owner:  # OpenWhisk's public view: published packages, never bindings
        found = [p for p in found if p.publish and not p.binding.is_bound]
    if page.count:
        return JSON({"packages": max(0, len(found) - page.skip)})
    return JSON([package_summary(p) for p in page.slice(found)])


@route(
    _ENTITY,
    "GET",
    Operation(
        summary="Get a package with its actions and feeds; a binding shows its bound package's",
        tag="Packages",
        response=PackageWithActions,
        errors=(400, 404),
    ),
)
@authenticated
async def get_package(request: Request, identity: Identity) -> Response:
    store = state(request).store
    resolved = await resolve_package(
        store, identity, request.path_params["namespace"], request.path_params["name"]
    )
    contents = await store.list_in_package(resolved.package.namespace, resolved.package.name)
    return JSON(package_view(resolved.requested, contents, resolved.parameters))


@route(
    _ENTITY,
    "PUT",
    Operation(
        summary="Create or update a package or a package binding",
        tag="Packages",
        query=(Param(name="overwrite", type="boolean", description="Replace an existing package"),),
        body=PackagePut,
        response=Package,
        errors=(400, 409, 413),
    ),
)
@authenticated
async def put_package(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    name = validate_name(request.path_params["name"], "package name")
    if name in RESERVED_NAMES:
        raise BadRequest(f"Package name '{name}' is reserved.")
    put = await read_json(request, PackagePut)
    limits.check_entity_sizes(
        parameters=params.normalize(put.parameters) if isinstance(put.parameters, list) else None,
        annotations=params.normalize(put.annotations) if isinstance(put.annotations, list) else None,
    )
    binding = requested_binding(put, namespace)
    store = state(request).store
    if binding is not None:
        await check_binding_target(store, identity, binding)
    stored = await put_entity(
        store,
        PACKAGES,
        namespace,
        name,
        overwrite=query_bool(request, "overwrite"),
        build=lambda current: (
            new_package(put, namespace=namespace, name=name, binding=binding)
            if current is None
            else updated_package(put, current, binding)
        ),
    )
    return JSON(stored)


@route(
    _ENTITY,
    "DELETE",
    Operation(
        summary="Delete a package (with `force`, its actions too) or a binding",
        tag="Packages",
        query=(Param(name="force", type="boolean", description="Also delete the actions in the package"),),
        response=Package,
        errors=(400, 404, 409),
    ),
)
@authenticated
async def delete_package(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    name = validate_name(request.path_params["name"], "package name")
    force = query_bool(request, "force")
    store = state(request).store
    current = await store.get(PACKAGES, namespace, name)
    if not current.entity.binding.is_bound:
        contents = await store.list_in_package(namespace, name)
        if contents and not force:
            raise Conflict(not_empty_message(len(contents)))
        for action in contents:
            await store.delete(ACTIONS, namespace, f"{name}/{action.name}")
    return JSON(await store.delete(PACKAGES, namespace, name, revision=current.revision))


routes = [list_packages, get_package, put_package, delete_package]
