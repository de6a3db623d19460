"""How action and package PUT bodies become stored entities, and the list/read views (pure functions)."""

from __future__ import annotations

import msgspec
import pytest

from api.entity_views import (
    ActionPut,
    BindingPut,
    ExecPut,
    LimitsPut,
    PackagePut,
    action_summary,
    code_exec,
    exec_size,
    new_action,
    new_package,
    package_summary,
    package_view,
    parse_component,
    requested_binding,
    sequence_exec,
    updated_action,
    updated_package,
    without_code,
)
from broker import codec
from broker.entities import Action, Binding, Exec, FullyQualifiedName, KeyValue, Package
from broker.errors import BadRequest, Conflict

CODE = Exec(kind="python:3.11", code="x", binary=False)


def kv(**values: object) -> list[KeyValue]:
    return [KeyValue(key=k, value=v) for k, v in values.items()]


def as_dict(pairs: list[KeyValue]) -> dict[str, object]:
    return {p.key: p.value for p in pairs}


def test_code_exec_resolves_the_kind_and_computes_binary() -> None:
    assert code_exec(ExecPut(kind="python:default", code="QUJD", binary=False)) == Exec(
        kind="python:3.11", code="QUJD", binary=True
    )
    with pytest.raises(
        BadRequest, match="'code' must be a string defined in 'exec' for 'nodejs:default' actions"
    ):
        code_exec(ExecPut(kind="nodejs:default"))


@pytest.mark.parametrize(
    ("ref", "path", "name"),
    [("/ns/a", "ns", "a"), ("ns/pkg/a", "ns/pkg", "a"), ("/_/a", "me", "a"), ("/_/pkg/a", "me/pkg", "a")],
)
def test_components_are_fully_qualified(ref: str, path: str, name: str) -> None:
    assert parse_component(ref, "me") == FullyQualifiedName(path=path, name=name)


@pytest.mark.parametrize("ref", ["a", "/a", "/a/b/c/d", "/ns/bad*name"])
def test_malformed_components_are_bad_requests(ref: str) -> None:
    with pytest.raises(BadRequest):
        parse_component(ref, "me")


def test_exec_size_counts_code_and_entry_point_bytes() -> None:
    assert exec_size(Exec(kind="python:3.11", code="ab€", main="m")) == 2 + 3 + 1
    assert exec_size(sequence_exec([FullyQualifiedName(path="ns", name="a")])) == len("ns/a")


def test_a_new_action_gets_defaults_and_controller_annotations() -> None:
    put = ActionPut(parameters=kv(a=1, b=2), annotations=kv(a=1), limits=LimitsPut(memory=128))
    action = new_action(put, namespace="ns", name="n", exec=CODE)
    assert (action.namespace, action.name, action.version, action.publish) == ("ns", "n", "0.0.1", False)
    assert action.limits.memory == 128 and action.limits.timeout == 60000
    assert as_dict(action.annotations) == {"a": 1, "provide-api-key": False, "exec": "python:3.11"}
    with pytest.raises(BadRequest, match=r"^exec undefined$"):
        new_action(ActionPut(), namespace="ns", name="n", exec=None)
    with pytest.raises(BadRequest, match="memory 1 MB below"):
        new_action(ActionPut(limits=LimitsPut(memory=1)), namespace="ns", name="n", exec=CODE)


def test_a_sequence_keeps_only_its_components_as_parameters() -> None:
    seq = sequence_exec([FullyQualifiedName(path="ns", name="a")])
    action = new_action(ActionPut(parameters=kv(x=1)), namespace="ns", name="s", exec=seq)
    assert action.parameters == kv(_actions=["/ns/a"])
    # An update without exec keeps the sequence's parameters whatever the body says.
    kept = updated_action(ActionPut(parameters=kv(y=2)), action, None)
    assert kept.parameters == action.parameters and kept.exec == seq
    # Becoming a code action drops `_actions` unless the body names parameters.
    assert updated_action(ActionPut(), action, CODE).parameters == []
    assert updated_action(ActionPut(parameters=kv(z=3)), action, CODE).parameters == kv(z=3)


def test_an_update_merges_annotations_and_limits() -> None:
    current = new_action(
        ActionPut(annotations=kv(keep=1, drop=2), limits=LimitsPut(timeout=500), parameters=kv(p=1)),
        namespace="ns",
        name="n",
        exec=CODE,
    )
    put = ActionPut(
        annotations=kv(keep=9, add=3), delAnnotations=["drop", "provide-api-key"], limits=LimitsPut(logs=5)
    )
    updated = updated_action(put, current, None)
    assert as_dict(updated.annotations) == {
        "keep": 9,
        "exec": "python:3.11",
        "add": 3,
    }  # no provide-api-key again
    assert (updated.limits.timeout, updated.limits.logs) == (500, 5)
    assert updated.parameters == kv(p=1) and updated.exec == CODE
    assert updated.version == current.version  # the store bumps it, not the builder


def test_without_code_leaves_the_rest_of_exec() -> None:
    action = Action(namespace="ns", name="n", exec=Exec(kind="python:3.11", code="x", binary=False, main="m"))
    assert codec.to_builtins(without_code(action).exec) == {
        "kind": "python:3.11",
        "binary": False,
        "main": "m",
    }


def test_bindings_resolve_underscore_and_need_both_fields() -> None:
    assert requested_binding(PackagePut(), "me") is None
    assert requested_binding(PackagePut(binding=BindingPut()), "me") is None
    assert requested_binding(PackagePut(binding=BindingPut(namespace="_", name="p")), "me") == Binding(
        namespace="me", name="p"
    )
    with pytest.raises(BadRequest, match="both"):
        requested_binding(PackagePut(binding=BindingPut(name="p")), "me")


def test_packages_own_the_binding_annotation_and_cannot_become_bindings() -> None:
    bound = Binding(namespace="other", name="p")
    put = PackagePut(annotations=kv(binding="forged", note=1))
    binding = new_package(put, namespace="me", name="b", binding=bound)
    assert as_dict(binding.annotations) == {"note": 1, "binding": {"namespace": "other", "name": "p"}}
    plain = new_package(put, namespace="me", name="plain", binding=None)
    assert as_dict(plain.annotations) == {"note": 1} and not plain.binding.is_bound
    with pytest.raises(Conflict, match="cannot be converted into a binding"):
        updated_package(PackagePut(), plain, bound)
    rebound = updated_package(PackagePut(annotations=kv(x=1)), binding, Binding(namespace="me", name="q"))
    assert as_dict(rebound.annotations) == {"x": 1, "binding": {"namespace": "me", "name": "q"}}


def test_summaries_have_openwhisk_list_shapes() -> None:
    action = Action(
        namespace="ns", name="a", exec=Exec(kind="python:3.11", code="QUJD", binary=True), updated=5
    )
    assert set(codec.to_builtins(action_summary(action))) == {
        "namespace",
        "name",
        "version",
        "publish",
        "annotations",
        "updated",
        "limits",
        "exec",
    }
    assert codec.to_builtins(action_summary(action))["exec"] == {"binary": True}
    plain = Package(namespace="ns", name="p")
    assert codec.to_builtins(package_summary(plain))["binding"] is False
    bound = msgspec.structs.replace(plain, binding=Binding(namespace="o", name="q"))
    assert codec.to_builtins(package_summary(bound))["binding"] == {"namespace": "o", "name": "q"}


def test_package_view_separates_feeds_and_shows_merged_parameters() -> None:
    run = Action(namespace="ns/p", name="run", exec=CODE)
    feed = Action(namespace="ns/p", name="feed", exec=CODE, annotations=kv(feed=True))
    view = codec.to_builtins(package_view(Package(namespace="ns", name="p"), [run, feed], kv(a=1)))
    assert [a["name"] for a in view["actions"]] == ["run"]
    assert [f["name"] for f in view["feeds"]] == ["feed"]
    assert view["parameters"] == [{"key": "a", "value": 1}] and view["binding"] == {}
