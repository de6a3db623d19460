"""Rule filters: EventBridge-style event patterns, validated and matched."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import BadRequest
from broker.event_patterns import matches, validate_pattern

EVENT = {
    "source": "github",
    "type": "push",
    "repo": {"name": "squall", "stars": 42, "topics": ["nats", "serverless"]},
    "branch": "refs/heads/main",
    "size": 5.0,
    "draft": False,
    "labels": [],
    "nothing": None,
}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"source": ["github"]}, True),
        ({"source": ["gitlab"]}, False),
        ({"source": ["gitlab", "github"]}, True),
        ({"repo": {"name": ["squall"]}}, True),
        ({"repo": {"name": ["other"]}}, False),
        ({"repo": {"topics": ["nats"]}}, True),  # any element of a list
        ({"repo": {"topics": ["kafka"]}}, False),
        ({"branch": [{"prefix": "refs/heads/"}]}, True),
        ({"branch": [{"suffix": "/main"}]}, True),
        ({"branch": [{"suffix": "/dev"}]}, False),
        ({"type": [{"equals-ignore-case": "PUSH"}]}, True),
        ({"type": [{"anything-but": "pull"}]}, True),
        ({"type": [{"anything-but": ["push", "pull"]}]}, False),
        ({"branch": [{"anything-but": {"prefix": "refs/tags/"}}]}, True),
        ({"branch": [{"anything-but": {"prefix": "refs/heads/"}}]}, False),
        ({"repo": {"stars": [{"numeric": [">", 10, "<=", 42]}]}}, True),
        ({"repo": {"stars": [{"numeric": [">", 42]}]}}, False),
        ({"size": [5]}, True),  # 5 and 5.0 are one JSON number
        ({"draft": [False]}, True),
        ({"draft": [0]}, False),  # false is not 0
        ({"nothing": [None]}, True),
        ({"missing": [{"exists": False}]}, True),
        ({"missing": [{"exists": True}]}, False),
        ({"source": [{"exists": True}]}, True),
        ({"labels": [{"exists": True}]}, False),  # an empty list counts as absent
        ({"missing": ["x"]}, False),
        ({"missing": [{"anything-but": "x"}]}, False),  # anything-but needs the field
        ({"source": ["github"], "type": ["pull"]}, False),  # every key must match
        ({"source": [{"numeric": [">", 1]}]}, False),  # a string is not a number
    ],
)
def test_matching(pattern: dict[str, Any], expected: bool) -> None:
    validate_pattern(pattern)
    assert matches(pattern, EVENT) is expected


def test_nested_pattern_against_a_scalar_does_not_match() -> None:
    assert not matches({"source": {"name": ["x"]}}, EVENT)


def test_nested_pattern_against_a_list_of_objects() -> None:
    event = {"commits": [{"author": "a"}, {"author": "b"}]}
    assert matches({"commits": {"author": ["b"]}}, event)
    assert not matches({"commits": {"author": ["c"]}}, event)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ([], "non-empty object"),
        ({}, "non-empty object"),
        ({"a": "x"}, "object or a list"),
        ({"a": []}, "1 to 100 alternatives"),
        ({"a": [{"prefix": 1}]}, "'prefix' matcher"),
        ({"a": [{"exists": "yes"}]}, "'exists' matcher"),
        ({"a": [{"numeric": [">"]}]}, "'numeric' matcher"),
        ({"a": [{"numeric": ["~", 1]}]}, "unknown operator"),
        ({"a": [{"numeric": [">", "1"]}]}, "not a number"),
        ({"a": [{"regex": ".*"}]}, "unknown matcher 'regex'"),
        ({"a": [{"prefix": "x", "suffix": "y"}]}, "neither a literal nor one matcher"),
        ({"a": [{"anything-but": {"wildcard": "*"}}]}, "'anything-but' matcher"),
        ({"a": [{"anything-but": [{"x": 1}]}]}, "must hold literals"),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": ["x"]}}}}}}}}}}}, "deeper than"),
    ],
)
def test_invalid_patterns_are_refused_with_the_place_and_reason(pattern: Any, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        validate_pattern(pattern)
    assert message in err.value.message


def test_patterns_are_bounded_in_alternatives_and_string_length() -> None:
    from broker.event_patterns import MAX_PATTERN_ALTERNATIVES, MAX_STRING

    many = {f"k{i}": [f"v{j}" for j in range(100)] for i in range(MAX_PATTERN_ALTERNATIVES // 100 + 1)}
    with pytest.raises(BadRequest, match="alternatives in all"):
        validate_pattern(many)
    with pytest.raises(BadRequest, match="characters"):
        validate_pattern({"a": [{"prefix": "x" * (MAX_STRING + 1)}]})
    with pytest.raises(BadRequest, match="characters"):
        validate_pattern({"k" * (MAX_STRING + 1): ["x"]})
