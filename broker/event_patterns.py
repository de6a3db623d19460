"""Event patterns for rule filters, in EventBridge's vocabulary: validation and matching (both pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from broker.errors import BadRequest

# A pattern is a JSON object. Each key names a field of the event; its value is either a nested pattern
# (an object) or a non-empty list of alternatives, any one of which may match. Every key must match.
# Alternatives are literals (exact match) or one-key objects naming a matcher:
#   {"prefix": "s"}  {"suffix": "s"}  {"equals-ignore-case": "s"}
#   {"anything-but": literal | [literals] | {"prefix": "s"} | {"suffix": "s"}}
#   {"numeric": [">", 0, "<=", 5]}   {"exists": true | false}
# An event field holding a list matches when any of its elements does, as in EventBridge.

_MISSING = object()
_COMPARATORS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
MAX_DEPTH = 10
MAX_ALTERNATIVES = 100


def validate_pattern(pattern: Any) -> None:
    """Raise BadRequest, saying where and why, unless `pattern` is a well-formed event pattern."""
    _validate_object(pattern, "$", 0)


def _validate_object(pattern: Any, where: str, depth: int) -> None:
    if not isinstance(pattern, Mapping) or not pattern:
        raise BadRequest(f"The event pattern at {where} must be a non-empty object.")
    if depth >= MAX_DEPTH:
        raise BadRequest(f"The event pattern nests deeper than {MAX_DEPTH} levels at {where}.")
    for key, value in pattern.items():
        at = f"{where}.{key}"
        if isinstance(value, Mapping):
            _validate_object(value, at, depth + 1)
        elif isinstance(value, list):
            if not value or len(value) > MAX_ALTERNATIVES:
                raise BadRequest(f"The event pattern at {at} must list 1 to {MAX_ALTERNATIVES} alternatives.")
            for alternative in value:
                _validate_alternative(alternative, at)
        else:
            raise BadRequest(f"The event pattern at {at} must be an object or a list of alternatives.")


def _validate_alternative(alt: Any, at: str) -> None:
    if alt is None or isinstance(alt, str | int | float | bool):
        return
    if not isinstance(alt, Mapping) or len(alt) != 1:
        raise BadRequest(
            f"The event pattern at {at} has an alternative that is neither a literal nor one matcher."
        )
    ((name, arg),) = alt.items()
    if name in ("prefix", "suffix", "equals-ignore-case"):
        if not isinstance(arg, str):
            raise BadRequest(f"The '{name}' matcher at {at} takes a string.")
    elif name == "exists":
        if not isinstance(arg, bool):
            raise BadRequest(f"The 'exists' matcher at {at} takes true or false.")
    elif name == "anything-but":
        _validate_anything_but(arg, at)
    elif name == "numeric":
        _validate_numeric(arg, at)
    else:
        raise BadRequest(f"The event pattern at {at} uses the unknown matcher '{name}'.")


def _validate_anything_but(arg: Any, at: str) -> None:
    if isinstance(arg, Mapping):
        if (
            len(arg) != 1
            or next(iter(arg)) not in ("prefix", "suffix")
            or not isinstance(next(iter(arg.values())), str)
        ):
            raise BadRequest(
                f"The 'anything-but' matcher at {at} takes a literal, a list, or a prefix/suffix."
            )
    elif isinstance(arg, list):
        if not arg or not all(_is_literal(v) for v in arg):
            raise BadRequest(f"The 'anything-but' list at {at} must hold literals.")
    elif not _is_literal(arg):
        raise BadRequest(f"The 'anything-but' matcher at {at} takes a literal, a list, or a prefix/suffix.")


def _validate_numeric(arg: Any, at: str) -> None:
    if not isinstance(arg, list) or not arg or len(arg) % 2 or len(arg) > 4:
        raise BadRequest(f"The 'numeric' matcher at {at} takes one or two [operator, number] pairs.")
    for op, number in zip(arg[::2], arg[1::2], strict=True):
        if op not in _COMPARATORS:
            raise BadRequest(f"The 'numeric' matcher at {at} has the unknown operator '{op}'.")
        if not _is_number(number):
            raise BadRequest(
                f"The 'numeric' matcher at {at} compares with '{number}', which is not a number."
            )


def _is_literal(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether `event` (a JSON document) satisfies a validated `pattern`."""
    for key, expected in pattern.items():
        actual = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(expected, Mapping):
            if not _nested_matches(expected, actual):
                return False
        elif not any(_alternative_matches(alt, actual) for alt in expected):
            return False
    return True


def _nested_matches(pattern: Mapping[str, Any], actual: Any) -> bool:
    if isinstance(actual, list):
        return any(isinstance(item, Mapping) and matches(pattern, item) for item in actual)
    return isinstance(actual, Mapping) and matches(pattern, actual)


def _alternative_matches(alt: Any, actual: Any) -> bool:
    if isinstance(alt, Mapping):
        ((name, arg),) = alt.items()
        if name == "exists":
            present = actual is not _MISSING and not (isinstance(actual, list) and not actual)
            return present is arg
    if actual is _MISSING:
        return False
    values: Sequence[Any] = actual if isinstance(actual, list) else [actual]
    return any(_value_matches(alt, value) for value in values)


def _value_matches(alt: Any, value: Any) -> bool:
    if not isinstance(alt, Mapping):
        return _same_literal(alt, value)
    ((name, arg),) = alt.items()
    if name == "prefix":
        return isinstance(value, str) and value.startswith(arg)
    if name == "suffix":
        return isinstance(value, str) and value.endswith(arg)
    if name == "equals-ignore-case":
        return isinstance(value, str) and value.casefold() == arg.casefold()
    if name == "numeric":
        return _is_number(value) and all(
            _COMPARATORS[op](value, bound) for op, bound in zip(arg[::2], arg[1::2], strict=True)
        )
    if name == "anything-but":
        return not _anything_but_hits(arg, value)
    return False


def _anything_but_hits(arg: Any, value: Any) -> bool:
    if isinstance(arg, Mapping):
        ((how, text),) = arg.items()
        return isinstance(value, str) and (
            value.startswith(text) if how == "prefix" else value.endswith(text)
        )
    excluded = arg if isinstance(arg, list) else [arg]
    return any(_same_literal(e, value) for e in excluded)


def _same_literal(expected: Any, value: Any) -> bool:
    # JSON has one number type: 5 and 5.0 are the same value, but true is not 1.
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected is value
    if _is_number(expected) and _is_number(value):
        return float(expected) == float(value)
    return type(expected) is type(value) and expected == value
