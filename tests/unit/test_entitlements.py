"""Who may run what when it runs (broker/entitlements.py), and keys sealed for the invoker (broker/key_seal.py):
the pure decisions, with an in-memory reader."""

from __future__ import annotations

from typing import Any

import pytest

from broker.action_refs import resolve_component
from broker.entities import Action, Binding, Collection, Entity, Exec, KeyValue, Package, storage_path
from broker.entitlements import check_run, may_use
from broker.entity_store import Stored
from broker.errors import Forbidden, NotFound
from broker.invocations import hands_api_key
from broker.key_seal import KeySeal, decode_secret, new_secret


def package(
    namespace: str, name: str, *, publish: bool = False, binds: tuple[str, str] | None = None
) -> Package:
    binding = Binding() if binds is None else Binding(namespace=binds[0], name=binds[1])
    return Package(namespace=namespace, name=name, publish=publish, binding=binding)


PUBLISHED = package("a", "lib", publish=True)
PRIVATE = package("a", "lib")


def test_the_default_package_is_never_shared() -> None:
    assert may_use("a", "a", None, None)
    assert not may_use("b", "a", None, None)


def test_a_package_is_shared_while_it_is_published() -> None:
    assert may_use("b", "a", PUBLISHED, None)
    assert not may_use("b", "a", PRIVATE, None)
    assert may_use("a", "a", PRIVATE, None)


def test_another_namespaces_binding_is_never_shared_even_published() -> None:
    theirs = package("a", "mine", publish=True, binds=("a", "lib"))
    assert not may_use("b", "a", theirs, PUBLISHED)


def test_ones_own_binding_reaches_another_package_only_while_published() -> None:
    mine = package("b", "mine", binds=("a", "lib"))
    assert may_use("b", "b", mine, PUBLISHED)
    assert not may_use("b", "b", mine, PRIVATE)
    assert not may_use("b", "b", mine, None)  # what it binds is gone
    own_target = package("b", "mine", binds=("b", "lib"))
    assert may_use("b", "b", own_target, package("b", "lib"))


class Memory:
    """An entity reader over a dict, counting reads (the hot path must not read)."""

    def __init__(self, *entities: Entity) -> None:
        self.entities = {storage_path(e): e for e in entities}
        self.reads = 0

    async def get(self, collection: Collection[Any], namespace: str, name: str) -> Stored[Any]:
        self.reads += 1
        found = self.entities.get((namespace, name))
        if found is None or not isinstance(found, collection.type):
            raise NotFound()
        return Stored(entity=found, revision=1)


def code_action(namespace: str, name: str) -> Action:
    return Action(namespace=namespace, name=name, exec=Exec(kind="python:3.11", code="x"))


async def test_running_ones_own_action_reads_nothing() -> None:
    store = Memory()
    await check_run(store, "a", "a/lib/act", None)
    await check_run(store, "a", "a/act", None)
    assert store.reads == 0


async def test_a_run_is_refused_once_its_package_is_unpublished() -> None:
    store = Memory(PUBLISHED)
    await check_run(store, "b", "a/lib/act", None)
    store.entities[("a", "lib")] = PRIVATE
    with pytest.raises(Forbidden):
        await check_run(store, "b", "a/lib/act", None)
    with pytest.raises(Forbidden):
        await check_run(store, "b", "a/act", None)  # another namespace's default package
    with pytest.raises(Forbidden):
        await check_run(store, "b", "a/gone/act", None)  # missing reads as refused, not as missing


async def test_a_run_through_a_binding_is_checked_through_it() -> None:
    mine = package("b", "mine", binds=("a", "lib"))
    store = Memory(mine, PUBLISHED)
    await check_run(store, "b", "a/lib/act", "b/mine")
    store.entities[("a", "lib")] = PRIVATE
    with pytest.raises(Forbidden):
        await check_run(store, "b", "a/lib/act", "b/mine")
    store.entities[("a", "lib")] = PUBLISHED
    with pytest.raises(Forbidden):  # a binding of another namespace, named in a forged or stale run
        await check_run(store, "c", "a/lib/act", "b/mine")
    store.entities[("b", "mine")] = package("b", "mine", binds=("a", "other"))
    with pytest.raises(Forbidden):  # rebound since the run was queued
        await check_run(store, "b", "a/lib/act", "b/mine")


async def test_resolving_a_reference_applies_the_same_rules() -> None:
    theirs = package("a", "shared", publish=True, binds=("a", "lib"))
    mine = package("b", "mine", binds=("a", "lib"))
    act = code_action("a/lib", "act")
    store = Memory(PUBLISHED, theirs, mine, act, code_action("a", "top"))
    assert (await resolve_component(store, "/a/lib/act", "b")).action == act
    assert (await resolve_component(store, "/b/mine/act", "b")).binding == "b/mine"
    for ref in ("/a/shared/act", "/a/top", "/a/nothing/act"):
        with pytest.raises(Forbidden):
            await resolve_component(store, ref, "b")
    store.entities[("a", "lib")] = PRIVATE
    for ref in ("/a/lib/act", "/b/mine/act"):
        with pytest.raises(Forbidden):
            await resolve_component(store, ref, "b")
    assert (await resolve_component(store, "/a/lib/act", "a")).action == act
    with pytest.raises(NotFound):  # one's own missing package stays a 404
        await resolve_component(store, "/b/nothing/act", "b")


def test_a_key_is_handed_only_to_the_callers_own_code_that_asks() -> None:
    asks = [KeyValue(key="provide-api-key", value=True)]
    assert hands_api_key(asks, "a", "a")
    assert not hands_api_key(asks, "a", "b")
    assert not hands_api_key([KeyValue(key="provide-api-key", value=False)], "a", "a")


def test_a_sealed_key_opens_only_with_its_secret_and_namespace() -> None:
    seal = KeySeal(new_secret())
    sealed = seal.seal("uuid:secret", "a")
    assert "secret" not in sealed and sealed != seal.seal("uuid:secret", "a")  # a fresh nonce each time
    assert seal.open(sealed, "a") == "uuid:secret"
    assert seal.open(sealed, "b") is None
    assert KeySeal(new_secret()).open(sealed, "a") is None
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert seal.open(tampered, "a") is None
    assert seal.open("uuid:secret", "a") is None
    assert seal.open("v1.!!", "a") is None and seal.open("v1.", "a") is None


def test_a_secret_must_be_32_bytes_of_base64url() -> None:
    assert len(decode_secret(new_secret())) == 32
    for bad in ("", "short", "!" * 44):
        with pytest.raises(ValueError, match="invocation secret"):
            decode_secret(bad)
