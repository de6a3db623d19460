"""Event patterns for rule filters, in EventBridge's vocabulary: validation, and matching by the compiled
matchers of broker/event_matcher.py (both pure)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from broker.errors import BadRequest
from broker.event_matcher import COMPARATORS, Budget, compile_pattern

# A pattern is a JSON object. Each key names a field of the event; its value is either a nested pattern
# (an object) or a non-empty list of alternatives, any one of which may match. Every key must match.
# Alternatives are literals (exact match) or one-key objects naming a matcher:
#   {"prefix": "s"}  {"suffix": "s"}  {"equals-ignore-case": "s"}
#   {"anything-but": literal | [literals] | {"prefix": "s"} | {"suffix": "s"}}
#   {"numeric": [">", 0, "<=", 5]}   {"exists": true | false}
# An event field holding a list matches when any of its elements does, as in EventBridge.

MAX_DEPTH = 10
MAX_ALTERNATIVES = 100  # per field
MAX_PATTERN_ALTERNATIVES = 1_000  # in the whole pattern
MAX_STRING = 1_024  # characters of a literal or a matcher's argument


def validate_pattern(pattern: Any) -> None:
    """Raise BadRequest, saying where and why, unless `pattern` is a well-formed event pattern."""
    _validate_object(pattern, "$", 0)
    total = _alternatives_in(pattern)
    if total > MAX_PATTERN_ALTERNATIVES:
        raise BadRequest(
            f"The event pattern lists {total} alternatives in all, more than the {MAX_PATTERN_ALTERNATIVES} allowed."
        )
    longest = max(_strings_in(pattern), key=len, default="")
    if len(longest) > MAX_STRING:
        raise BadRequest(
            f"The event pattern holds a string of {len(longest)} characters, more than the {MAX_STRING} allowed."
        )


def _alternatives_in(pattern: Mapping[str, Any]) -> int:
    return sum(
        _alternatives_in(value) if isinstance(value, Mapping) else len(value) for value in pattern.values()
    )


def _strings_in(value: Any) -> Iterator[str]:
    """Every key and string of a (validated, hence bounded) pattern."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield key
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


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
        if op not in COMPARATORS:
            raise BadRequest(f"The 'numeric' matcher at {at} has the unknown operator '{op}'.")
        if not _is_number(number):
            raise BadRequest(
                f"The 'numeric' matcher at {at} compares with '{number}', which is not a number."
            )


def _is_literal(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(pattern: Mapping[str, Any], event: Any, budget: Budget | None = None) -> bool:
    """Whether `event` (a JSON document) satisfies a validated `pattern`; TooCostly past the budget."""
    return compile_pattern(pattern).matches(event, budget or Budget())
