"""Parameter lists: de-duplication, the package < binding < action < payload merge, and `final`."""

from __future__ import annotations

import pytest

from broker import params
from broker.entities import KeyValue
from broker.errors import BadRequest


def kv(**values: object) -> list[KeyValue]:
    return [KeyValue(key=k, value=v) for k, v in values.items()]


def test_normalize_keeps_one_entry_per_key_the_last_value_in_first_position() -> None:
    pairs = [*kv(a=1, b=2), KeyValue(key="a", value=3)]
    assert params.normalize(pairs) == kv(a=3, b=2)


def test_merge_lets_stronger_layers_win() -> None:
    merged = params.merge(kv(p=1, shared="package"), kv(b=2, shared="binding"), kv(shared="action", a=3))
    assert merged == kv(p=1, shared="action", b=2, a=3)


def test_without_lookup_and_has_key() -> None:
    pairs = kv(a=1, b=None)
    assert params.without(pairs, ["a", "zz"]) == kv(b=None)
    assert params.lookup(pairs, "a") == 1
    assert params.lookup(pairs, "missing") is None
    assert params.has_key(pairs, "b") and not params.has_key(pairs, "c")


@pytest.mark.parametrize(
    ("value", "final"), [(True, True), (False, False), ("true", False), (1, False), (None, False)]
)
def test_only_a_json_true_makes_an_action_final(value: object, final: bool) -> None:
    assert params.is_final(kv(final=value)) is final


def test_final_protects_only_defined_parameters() -> None:
    annotations = kv(final=True)
    assert params.immutable_keys(kv(a=1, b=None), annotations) == {"a"}
    assert params.immutable_keys(kv(a=1), []) == set()
    params.check_payload({"b": 2, "c": 3}, kv(a=1, b=None), annotations)
    with pytest.raises(BadRequest) as raised:
        params.check_payload({"a": 2}, kv(a=1), annotations)
    assert (
        raised.value.message == "Request defines parameters that are not allowed (e.g., reserved properties)."
    )


def test_invocation_arguments_merge_every_layer_then_the_payload() -> None:
    args = params.invocation_arguments(
        package=kv(x="package", y="package"),
        binding=kv(y="binding"),
        action=kv(z="action"),
        payload={"z": "payload", "w": 1},
    )
    assert args == {"x": "package", "y": "binding", "z": "payload", "w": 1}


def test_final_applies_to_parameters_inherited_from_the_package() -> None:
    with pytest.raises(BadRequest):
        params.invocation_arguments(
            package=kv(secret="s"), annotations=kv(final=True), payload={"secret": "x"}
        )
    assert params.invocation_arguments(package=kv(secret="s"), payload={"secret": "x"}) == {"secret": "x"}
