"""Who may read which package: following a binding, with OpenWhisk's entitlement (404 for the owner, 403
for anyone else unless published), for the package, action and invoke routes alike."""

from __future__ import annotations

from dataclasses import dataclass

from api.auth import Identity
from broker import params
from broker.entities import PACKAGES, Binding, KeyValue, Package, validate_name
from broker.entity_store import EntityStore
from broker.errors import BadRequest, Forbidden, NotFound, WrongCollection

BINDING_DOES_NOT_EXIST = "Binding references a package that does not exist."
BINDING_TO_BINDING = "Cannot bind to another package binding."


def not_authorized(resource: str) -> Forbidden:
    """OpenWhisk's 403 for a resource the caller may not read, worded as OpenWhisk words it."""
    return Forbidden(f"The supplied authentication is not authorized to access '{resource}'.")


@dataclass(frozen=True, slots=True)
class ResolvedPackage:
    """A package as read through its path: `requested` may be a binding, `package` never is."""

    requested: Package
    package: Package
    parameters: list[KeyValue]  # package parameters, overridden by the binding's


async def resolve_package(store: EntityStore, identity: Identity, segment: str, name: str) -> ResolvedPackage:
    """Read package `name` of namespace `segment` for `identity`, following a binding, with OpenWhisk's
    entitlement: an owner sees 404 for what is missing; anyone else gets 403 unless the package is
    published, and never sees another namespace's bindings (no leak of what exists)."""
    namespace, owner = identity.resolve_for_read(segment)
    resource = f"{namespace}/{validate_name(name, 'package name')}"
    requested = await _get_package(store, namespace, name, owner, resource)
    if not requested.binding.is_bound:
        if not (owner or requested.publish):
            raise not_authorized(resource)
        return ResolvedPackage(requested, requested, requested.parameters)
    if not owner:
        raise not_authorized(resource)
    bound = requested.binding
    assert isinstance(bound.namespace, str) and isinstance(bound.name, str)
    bound_owner = bound.namespace == identity.namespace
    target = await _get_package(store, bound.namespace, bound.name, bound_owner, resource)
    if target.binding.is_bound:
        raise NotFound()  # bindings of bindings are refused on PUT, so this is only a stale record
    if not (bound_owner or target.publish):
        raise not_authorized(resource)
    return ResolvedPackage(requested, target, params.merge(target.parameters, requested.parameters))


async def _get_package(store: EntityStore, namespace: str, name: str, owner: bool, resource: str) -> Package:
    try:
        return (await store.get(PACKAGES, namespace, name)).entity
    except (NotFound, WrongCollection):
        # Anyone but the owner gets the same 403 whether the name is free, a package, or another kind of
        # entity (whose 409 would tell a stranger which names exist there).
        if owner:
            raise
        raise not_authorized(resource) from None


async def check_binding_target(store: EntityStore, identity: Identity, binding: Binding) -> None:
    """A binding must name an existing package (not a binding) that the caller may read."""
    assert isinstance(binding.namespace, str) and isinstance(binding.name, str)
    owner = binding.namespace == identity.namespace
    resource = f"{binding.namespace}/{binding.name}"
    try:
        target = (await store.get(PACKAGES, binding.namespace, binding.name)).entity
    except (NotFound, WrongCollection):
        raise (BadRequest(BINDING_DOES_NOT_EXIST) if owner else not_authorized(resource)) from None
    if target.binding.is_bound:
        raise BadRequest(BINDING_TO_BINDING) if owner else not_authorized(resource)
    if not (owner or target.publish):
        raise not_authorized(resource)
