"""Action references (`/ns/[pkg/]name`) resolved to what runs: the action, its revision, and the package and
binding parameters beneath its own. Used by sequences (each component), the rule engine (each rule) and web
actions, each time they run: a reference the namespace may no longer use is refused (broker/entitlements.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from broker import kinds, params
from broker.entities import ACTIONS, PACKAGES, Action, Collection, Entity, KeyValue, parse_fqn
from broker.entitlements import may_use
from broker.entity_store import Stored
from broker.errors import BadRequest, Forbidden, NotFound, WrongCollection


@dataclass(frozen=True, slots=True)
class ResolvedAction:
    """An action ready to run: its KV revision, the package (and binding) parameters beneath its own, and
    the binding it was reached through (`ns/binding`), if any."""

    action: Action
    revision: int
    parameters: list[KeyValue]
    binding: str | None


E = TypeVar("E", bound=Entity)


class Reader(Protocol):
    """Where entities are read: an EntityStore, or the invoker's EntityCache in front of one."""

    async def get(self, collection: Collection[E], namespace: str, name: str) -> Stored[E]: ...


async def resolve_component(store: Reader, ref: str, namespace: str) -> ResolvedAction:
    """A component reference (`/ns/[pkg/]name`) as the action namespace `namespace` runs: NotFound when any part
    is gone, Forbidden when `namespace` may not use it now (another namespace's action outside a published
    package, another namespace's binding, a binding of a package no longer published)."""
    try:
        fqn = parse_fqn(ref, namespace)
    except BadRequest:
        raise NotFound() from None
    root, _, package = fqn.path.partition("/")
    if not package:
        if root != namespace:
            raise Forbidden()
        stored = await store.get(ACTIONS, root, fqn.name)
        return ResolvedAction(action=stored.entity, revision=stored.revision, parameters=[], binding=None)
    try:
        pkg = (await store.get(PACKAGES, root, package)).entity
    except (NotFound, WrongCollection):
        if root != namespace:
            raise Forbidden() from None  # as the API answers: what another namespace lacks is not told
        raise
    if pkg.binding.is_bound and root != namespace:
        raise Forbidden()  # before reading what it binds: another namespace's binding is never shared
    layers = pkg.parameters
    binding = None
    owner, owner_package = root, package
    if pkg.binding.is_bound:
        assert isinstance(pkg.binding.namespace, str) and isinstance(pkg.binding.name, str)
        owner, owner_package = pkg.binding.namespace, pkg.binding.name
        target = (await store.get(PACKAGES, owner, owner_package)).entity
        if not may_use(namespace, root, pkg, target):
            raise Forbidden()
        layers = params.merge(target.parameters, pkg.parameters)
        binding = f"{root}/{package}"
    elif not may_use(namespace, root, pkg, None):
        raise Forbidden()
    stored = await store.get(ACTIONS, owner, f"{owner_package}/{fqn.name}")
    return ResolvedAction(action=stored.entity, revision=stored.revision, parameters=layers, binding=binding)


def action_arguments(action: Action, bound: list[KeyValue], payload: dict[str, Any]) -> dict[str, Any]:
    """What an action receives: package < binding (`bound`) < action < payload, with `final` enforced.

    A sequence receives the payload alone, as in OpenWhisk: its only parameter is the component list.
    """
    if action.exec.kind == kinds.SEQUENCE:
        params.check_payload(payload, action.parameters, action.annotations)
        return payload
    return params.invocation_arguments(
        package=bound, action=action.parameters, annotations=action.annotations, payload=payload
    )
