"""Action limit ranges with OpenWhisk's messages, entity size limits, and the limit documents."""

from __future__ import annotations

import pytest

from broker import limits
from broker.entities import ActionLimits, KeyValue
from broker.errors import BadRequest, PayloadTooLarge
from broker.namespaces import NamespaceLimits


def test_the_defaults_and_the_bounds_are_accepted() -> None:
    for candidate in (
        ActionLimits(),
        ActionLimits(timeout=100, memory=128, logs=0, concurrency=1),
        ActionLimits(timeout=300_000, memory=512, logs=10, concurrency=1),
    ):
        assert limits.limit_error(candidate) is None
        assert limits.check_action_limits(candidate) is candidate


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (ActionLimits(timeout=99), "duration 99 milliseconds below allowed threshold of 100 milliseconds"),
        (
            ActionLimits(timeout=300_001),
            "duration 300001 milliseconds exceeds allowed threshold of 300000 milliseconds",
        ),
        (ActionLimits(memory=127), "memory 127 MB below allowed threshold of 134217728 B"),
        (ActionLimits(memory=513), "memory 513 MB exceeds allowed threshold of 536870912 B"),
        (ActionLimits(logs=-1), "log size -1 MB below allowed threshold of 0 B"),
        (ActionLimits(logs=11), "log size 11 MB exceeds allowed threshold of 10485760 B"),
        (ActionLimits(concurrency=0), "concurrency 0 below allowed threshold of 1"),
        (ActionLimits(concurrency=2), "concurrency 2 exceeds allowed threshold of 1"),
        # Several out of range: the first in OpenWhisk's order (timeout, memory, logs, concurrency) wins.
        (
            ActionLimits(timeout=1, memory=1),
            "duration 1 milliseconds below allowed threshold of 100 milliseconds",
        ),
    ],
)
def test_out_of_range_limits_get_openwhisk_messages(candidate: ActionLimits, message: str) -> None:
    assert limits.limit_error(candidate) == message
    with pytest.raises(BadRequest) as raised:
        limits.check_action_limits(candidate)
    assert raised.value.message == "The request content was malformed:\nrequirement failed: " + message


def test_parameter_size_counts_keys_and_compact_json_values() -> None:
    assert limits.parameters_size([]) == 0
    assert limits.parameters_size([KeyValue(key="ab", value={"x": [1, 2]})]) == 2 + len('{"x":[1,2]}')
    assert limits.parameters_size([KeyValue(key="é", value="ü")]) == 2 + 4  # UTF-8 bytes
    assert limits.parameters_size([KeyValue(key="n", value=None)]) == 1 + len("null")


def test_sizes_at_the_limit_pass_and_one_byte_more_is_413() -> None:
    fits = [KeyValue(key="k", value="x" * (limits.PARAMETERS_MAX_BYTES - 3))]  # 1 + len('"…"')
    assert limits.parameters_size(fits) == limits.PARAMETERS_MAX_BYTES
    limits.check_entity_sizes(exec_size=limits.CODE_MAX_BYTES, parameters=fits, annotations=fits)
    with pytest.raises(PayloadTooLarge) as raised:
        limits.check_entity_sizes(exec_size=limits.CODE_MAX_BYTES + 1)
    assert raised.value.message == "exec larger than allowed: 50331649 > 50331648 bytes."
    too_big = [KeyValue(key="kk", value=fits[0].value)]
    with pytest.raises(PayloadTooLarge, match=r"^parameters larger than allowed: 1048577 > 1048576 bytes\.$"):
        limits.check_entity_sizes(parameters=too_big)
    with pytest.raises(PayloadTooLarge, match=r"^annotations larger than allowed"):
        limits.check_entity_sizes(parameters=fits, annotations=too_big)


def test_system_limits_document_uses_openwhisk_units() -> None:
    doc = limits.system_limits_document()
    assert doc["min_action_duration"] == 100 and doc["max_action_duration"] == 300_000
    assert doc["min_action_memory"] == 128 * 1024 * 1024 and doc["max_action_memory"] == 512 * 1024 * 1024
    assert doc["max_action_logs"] == 10 * 1024 * 1024
    assert doc["sequence_length"] == 50
    assert (doc["actions_per_minute"], doc["concurrent_actions"], doc["triggers_per_minute"]) == (60, 30, 60)


def test_namespace_overrides_fill_in_the_system_defaults() -> None:
    plain = limits.effective_limits(NamespaceLimits())
    assert (plain.invocationsPerMinute, plain.concurrentInvocations, plain.firesPerMinute) == (60, 30, 60)
    assert (plain.minActionMemory, plain.maxActionMemory, plain.maxActionTimeout) == (128, 512, 300_000)
    assert plain.maxParameterSize == 1024 * 1024
    custom = limits.effective_limits(NamespaceLimits(invocationsPerMinute=5, concurrentInvocations=2))
    assert (custom.invocationsPerMinute, custom.concurrentInvocations, custom.firesPerMinute) == (5, 2, 60)
    assert custom.maxActionInstances == 2


def test_nesting_depth_counts_arrays_and_objects() -> None:
    from broker.limits import nested_deeper_than

    value: object = 1
    for _ in range(5):
        value = {"a": [value]}  # 10 levels
    assert not nested_deeper_than(value, 10)
    assert nested_deeper_than(value, 9)
    assert not nested_deeper_than([1, 2, {"a": "[[[[[[[["}], 2, raw=b'[1,2,{"a":"[[[[[[[["}]')
    wide = {"k": [{"x": [1]} for _ in range(1000)]}
    assert not nested_deeper_than(wide, 4) and nested_deeper_than(wide, 3)
