"""Entity models and their pure helpers: names, paths, versions, wire shapes."""

from __future__ import annotations

import msgspec
import pytest

from broker import codec
from broker.entities import (
    ACTIONS,
    COLLECTIONS,
    PACKAGES,
    RULES,
    TRIGGERS,
    Action,
    ActionLimits,
    Binding,
    Exec,
    FullyQualifiedName,
    KeyValue,
    Package,
    ReducedRule,
    Rule,
    Trigger,
    bump_patch,
    collection,
    parse_fqn,
    split_namespace,
    split_path,
    storage_path,
    validate_name,
)
from broker.errors import BadRequest


@pytest.mark.parametrize(
    "name",
    ["a", "_", "hello", "my action", "a@b.c&d-e", "x" * 256, "name.", "9lives", "a-"],
)
def test_valid_names_pass(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", " a", "a ", "-a", ".a", "@a", "a/b", "a*b", "a:b", "ä", "a\nb", "a\n", "a\tb"],
)
def test_invalid_names_are_bad_requests(name: str) -> None:
    with pytest.raises(BadRequest, match="not allowed"):
        validate_name(name)


def test_names_are_limited_to_256_characters() -> None:
    with pytest.raises(BadRequest, match="257 characters long; at most 256"):
        validate_name("x" * 257)


def test_split_path_and_package_nesting() -> None:
    assert split_path("a") == (None, "a")
    assert split_path("pkg/a") == ("pkg", "a")
    with pytest.raises(BadRequest, match="do not nest"):
        split_path("p/q/a")
    with pytest.raises(BadRequest):
        split_path("pkg/")


def test_packaged_action_is_stored_under_its_root_namespace() -> None:
    packaged = Action(namespace="ns/pkg", name="a", exec=Exec(kind="python:3.11", code=""))
    plain = Action(namespace="ns", name="a", exec=Exec(kind="python:3.11", code=""))
    assert split_namespace("ns/pkg") == ("ns", "pkg")
    assert split_namespace("ns") == ("ns", None)
    assert storage_path(packaged) == ("ns", "pkg/a")
    assert storage_path(plain) == ("ns", "a")


def test_parse_fqn_absolute_relative_and_packaged() -> None:
    assert parse_fqn("/other/t", "me") == FullyQualifiedName(path="other", name="t")
    assert parse_fqn("/other/pkg/a", "me") == FullyQualifiedName(path="other/pkg", name="a")
    assert parse_fqn("t", "me") == FullyQualifiedName(path="me", name="t")
    assert parse_fqn("pkg/a", "me") == FullyQualifiedName(path="me/pkg", name="a")
    assert str(parse_fqn("pkg/a", "me")) == "/me/pkg/a"
    for bad in ("/only", "/a/b/c/d", "p/q/a", "/ns/bad*name"):
        with pytest.raises(BadRequest):
            parse_fqn(bad, "me")


def test_bump_patch() -> None:
    assert bump_patch("0.0.1") == "0.0.2"
    assert bump_patch("1.2.9") == "1.2.10"
    for bad in ("1.2", "a.b.c", "1.2.3.4", "1.-2.3"):
        with pytest.raises(BadRequest):
            bump_patch(bad)


def test_action_wire_shape_has_openwhisk_defaults_and_omits_unset_exec_fields() -> None:
    action = Action(namespace="ns", name="a", exec=Exec(kind="nodejs:20", code="x", binary=False))
    doc = msgspec.json.decode(codec.encode(action))
    assert doc == {
        "namespace": "ns",
        "name": "a",
        "version": "0.0.1",
        "publish": False,
        "annotations": [],
        "updated": 0,
        "exec": {"kind": "nodejs:20", "code": "x", "binary": False},
        "parameters": [],
        "limits": {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1},
    }
    assert codec.decode(codec.encode(action), Action) == action


def test_exec_shapes_for_blackbox_and_sequence() -> None:
    blackbox = Exec(kind="blackbox", image="img:1", binary=False)
    sequence = Exec(kind="sequence", components=["/ns/a", "/ns/b"])
    assert msgspec.json.decode(codec.encode(blackbox)) == {
        "kind": "blackbox",
        "binary": False,
        "image": "img:1",
    }
    assert msgspec.json.decode(codec.encode(sequence)) == {
        "kind": "sequence",
        "components": ["/ns/a", "/ns/b"],
    }
    with_instances = msgspec.json.decode(codec.encode(ActionLimits(instances=2)))
    assert with_instances["instances"] == 2


def test_trigger_shape_with_and_without_rules() -> None:
    trigger = Trigger(namespace="ns", name="t")
    doc = msgspec.json.decode(codec.encode(trigger))
    assert doc["limits"] == {}
    assert doc["parameters"] == []
    assert "rules" not in doc
    bound = msgspec.structs.replace(
        trigger, rules={"ns/r": ReducedRule(action=FullyQualifiedName(path="ns", name="a"))}
    )
    doc = msgspec.json.decode(codec.encode(bound))
    assert doc["rules"] == {"ns/r": {"action": {"path": "ns", "name": "a"}, "status": "active"}}


def test_rule_and_package_shapes() -> None:
    rule = Rule(
        namespace="ns",
        name="r",
        trigger=FullyQualifiedName(path="ns", name="t"),
        action=FullyQualifiedName(path="ns/pkg", name="a"),
    )
    doc = msgspec.json.decode(codec.encode(rule))
    assert doc["status"] == "active"
    assert doc["action"] == {"path": "ns/pkg", "name": "a"}
    plain = Package(namespace="ns", name="p")
    bound = Package(namespace="ns", name="b", binding=Binding(namespace="other", name="p"))
    assert msgspec.json.decode(codec.encode(plain))["binding"] == {}
    assert msgspec.json.decode(codec.encode(bound))["binding"] == {"namespace": "other", "name": "p"}
    assert not plain.binding.is_bound
    assert bound.binding.is_bound
    assert codec.decode(b'{"namespace":"ns","name":"p","binding":{}}', Package) == plain


def test_key_value_omits_init_unless_set() -> None:
    assert codec.encode(KeyValue(key="k", value=1)) == b'{"key":"k","value":1}'
    assert msgspec.json.decode(codec.encode(KeyValue(key="k", value=1, init=True)))["init"] is True


def test_unknown_fields_are_skipped_for_forward_compatibility() -> None:
    data = b'{"namespace":"ns","name":"t","futureField":1}'
    assert codec.decode(data, Trigger) == Trigger(namespace="ns", name="t")


def test_collections_map_names_to_types() -> None:
    assert {name: c.type for name, c in COLLECTIONS.items()} == {
        "actions": Action,
        "triggers": Trigger,
        "rules": Rule,
        "packages": Package,
    }
    assert collection("rules") is RULES
    assert (ACTIONS.name, TRIGGERS.name, PACKAGES.name) == ("actions", "triggers", "packages")
    with pytest.raises(BadRequest):
        collection("activations")
