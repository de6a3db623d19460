"""Who may run which action, decided each time it runs: the caller's own, or one in a package another namespace
publishes at that moment (reached directly, or through a binding of the caller's own).

The API checks what a caller names when it asks (reads, invokes, rule and sequence PUTs); what runs later (a
rule's action, a sequence's components, a run waiting in its queue, a redriven dead letter) is checked again here
when it runs, so that unpublishing a package stops every other namespace's use of it from the next run on.
Reads go through the entity caches the engine and the invokers already keep: a run of the caller's own action
reads nothing more, another namespace's one or two packages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from broker.entities import PACKAGES, Package
from broker.errors import Forbidden, NotFound, WrongCollection

if TYPE_CHECKING:  # action_refs resolves through `may_use`
    from broker.action_refs import Reader

# OpenWhisk's 403 wording, as the record of a refused run carries it.
NOT_AUTHORIZED: Final = Forbidden.default_message


def may_use(caller: str, root: str, package: Package | None, bound: Package | None) -> bool:
    """Whether namespace `caller` may run an action that a reference names in namespace `root`, in `package`
    (None: the default package). When `package` is a binding, `bound` is the package it binds (None: gone).

    Another namespace's default package is never shared; another namespace's binding never either, published or
    not (its parameters are its owner's); a package is shared while it is published; a binding of the caller's
    own reaches another namespace's package only while that one is published."""
    if package is None:
        return root == caller
    if package.binding.is_bound:
        if root != caller or bound is None:
            return False
        return bound.namespace == caller or bound.publish
    return root == caller or package.publish


async def _package(store: Reader, namespace: str, name: str) -> Package | None:
    try:
        return (await store.get(PACKAGES, namespace, name)).entity
    except (NotFound, WrongCollection):
        return None


async def check_run(store: Reader, caller: str, action: str, binding: str | None) -> None:
    """Forbidden unless `caller` may run `action` ("owner/[pkg/]name", as an invocation names what it runs)
    reached through `binding` ("ns/binding", or None) right now."""
    root, _, path = action.partition("/")
    package_name, _, _ = path.rpartition("/")
    if binding is None:
        if root == caller:
            return  # the hot path: one's own action, nothing to read
        package = await _package(store, root, package_name) if package_name else None
        if not may_use(caller, root, package, None):
            raise Forbidden()
        return
    binding_root, _, binding_name = binding.partition("/")
    through = await _package(store, binding_root, binding_name)
    bound = await _package(store, root, package_name) if package_name else None
    # The binding must still bind the package the run was resolved to: rebound since, it names something else.
    if (
        through is None
        or through.binding.namespace != root
        or through.binding.name != package_name
        or not may_use(caller, binding_root, through, bound)
    ):
        raise Forbidden()
