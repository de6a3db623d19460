"""Compiled rule filters: the same answers as the pattern language says, at a bounded cost per event."""

from __future__ import annotations

from typing import Any

import pytest

from broker.event_matcher import EVENT_BUDGET, Budget, TooCostly, compile_pattern, literal_key
from broker.event_patterns import validate_pattern

HOSTILE = {"data": {"tags": [{"prefix": f"p{i:03}"} for i in range(50)] + [f"v{i}" for i in range(50)]}}


def test_literals_meet_as_json_values() -> None:
    assert literal_key(5) == literal_key(5.0)
    assert literal_key(True) != literal_key(1)
    assert literal_key(None) != literal_key("null")
    assert literal_key([1]) is None and literal_key({"a": 1}) is None


@pytest.mark.parametrize(
    ("alternatives", "present", "missing"),
    [
        ([{"exists": True}], True, False),
        ([{"exists": False}], False, True),
        ([{"exists": True}, {"exists": False}], True, True),
    ],
)
def test_exists_alternatives(alternatives: list[Any], present: bool, missing: bool) -> None:
    matcher = compile_pattern({"a": alternatives})
    assert matcher.matches({"a": 1}, Budget()) is present
    assert matcher.matches({"b": 1}, Budget()) is missing


def test_a_hostile_filter_against_a_large_event_costs_one_pass() -> None:
    validate_pattern(HOSTILE)
    tags = [f"x{i:06}" for i in range(18_000)]  # about 180 KB, none of them matching
    budget = Budget()
    assert not compile_pattern(HOSTILE).matches({"data": {"tags": tags}}, budget)
    assert EVENT_BUDGET - budget.left <= len(tags) + 3, (
        "each value is examined once, whatever the alternatives"
    )
    assert compile_pattern(HOSTILE).matches({"data": {"tags": [*tags, "p049-yes"]}}, Budget())
    assert compile_pattern(HOSTILE).matches({"data": {"tags": ["v7"]}}, Budget())


def test_an_event_past_the_budget_is_abandoned() -> None:
    huge = {"data": {"tags": ["x"] * (EVENT_BUDGET + 1)}}
    with pytest.raises(TooCostly):
        compile_pattern(HOSTILE).matches(huge, Budget())


def test_the_budget_is_shared_by_all_of_an_events_filters() -> None:
    event = {"data": {"tags": ["x"] * (EVENT_BUDGET // 2)}}
    budget = Budget()
    compile_pattern(HOSTILE).matches(event, budget)
    with pytest.raises(TooCostly):
        compile_pattern(HOSTILE).matches(event, budget)


def test_nested_lists_are_walked_once_per_element() -> None:
    pattern = {"items": {"kind": ["a"]}}
    budget = Budget()
    event = {"items": [{"kind": "b"} for _ in range(1_000)] + [{"kind": "a"}]}
    assert compile_pattern(pattern).matches(event, budget)
    assert EVENT_BUDGET - budget.left < 4_000


def test_a_pattern_is_compiled_once() -> None:
    assert compile_pattern({"a": ["x"]}) is compile_pattern({"a": ["x"]})
