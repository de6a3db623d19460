"""Rule filters compiled once into matchers whose cost is linear in the event and bounded by a budget (pure).

A filter is matched against every event of its trigger, and a tenant chooses both the filter and the events: so a
filter's alternatives are compiled into hashed sets and tuples that C code scans (one set lookup per literal, one
`startswith(tuple)` for all prefixes), and one event's matching may examine at most a budget of values across all
its rules — past it the match is abandoned (`TooCostly`) rather than allowed to hold the engine's event loop.
Matching is also a generator (`Matcher.steps`) that yields after every SLICE values, so that the engine can let
the loop serve others between slices: a whole budget is ~100 ms of CPU on a busy machine, a slice about 1 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from broker import codec

# Values one event's filters may examine in all: about 40 ms of CPU at worst (1 µs a value).
EVENT_BUDGET: Final = 50_000
SLICE: Final = 500  # values matched between two yields of `Matcher.steps`: about a millisecond
_MISSING: Final = object()
COMPARATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class TooCostly(Exception):
    """Matching one event spent its budget: the filter is not evaluated (and does not match)."""


class Budget:
    """What is left of one event's budget, shared by the filters of all its rules."""

    __slots__ = ("left",)

    def __init__(self, values: int = EVENT_BUDGET) -> None:
        self.left = values

    def spend(self, values: int) -> None:
        self.left -= values
        if self.left < 0:
            raise TooCostly()


def literal_key(value: Any) -> tuple[str, Any] | None:
    """A hashable key under which JSON-equal literals meet: 5 and 5.0 are one number, true is not 1; None for
    values that are not literals (objects and arrays never equal a literal)."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, str):
        return ("string", value)
    return None


@dataclass(frozen=True, slots=True)
class _AnythingBut:
    literals: frozenset[tuple[str, Any]] = frozenset()
    prefix: str | None = None
    suffix: str | None = None

    def hits(self, value: Any) -> bool:
        if self.prefix is not None:
            return isinstance(value, str) and value.startswith(self.prefix)
        if self.suffix is not None:
            return isinstance(value, str) and value.endswith(self.suffix)
        return literal_key(value) in self.literals


@dataclass(slots=True)
class _Alternatives:
    """One field's list of alternatives, grouped by how they are tested."""

    literals: set[tuple[str, Any]] = field(default_factory=set)
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    folded: set[str] = field(default_factory=set)
    numeric: list[tuple[tuple[str, float], ...]] = field(default_factory=list)
    anything_but: list[_AnythingBut] = field(default_factory=list)
    exists: set[bool] = field(
        default_factory=set
    )  # `exists: true` matches a present field, false a missing one

    def add(self, alt: Any) -> None:
        if not isinstance(alt, Mapping):
            key = literal_key(alt)
            if key is not None:
                self.literals.add(key)
            return
        ((name, arg),) = alt.items()
        if name == "prefix":
            self.prefixes += (arg,)
        elif name == "suffix":
            self.suffixes += (arg,)
        elif name == "equals-ignore-case":
            self.folded.add(arg.casefold())
        elif name == "numeric":
            self.numeric.append(tuple(zip(arg[::2], (float(b) for b in arg[1::2]), strict=True)))
        elif name == "exists":
            self.exists.add(arg)
        elif name == "anything-but":
            if isinstance(arg, Mapping):
                ((how, text),) = arg.items()
                self.anything_but.append(
                    _AnythingBut(
                        prefix=text if how == "prefix" else None, suffix=text if how != "prefix" else None
                    )
                )
            else:
                excluded = arg if isinstance(arg, list) else [arg]
                keys = frozenset(k for k in map(literal_key, excluded) if k is not None)
                self.anything_but.append(_AnythingBut(literals=keys))

    def steps(self, actual: Any, budget: Budget) -> Steps:
        if self.exists:
            present = actual is not _MISSING and not (isinstance(actual, list) and not actual)
            if present in self.exists:
                return True
        if actual is _MISSING:
            return False
        values = actual if isinstance(actual, list) else (actual,)
        budget.spend(len(values))
        for start in range(0, len(values), SLICE):
            if start:
                yield
            if any(self._value_matches(value) for value in values[start : start + SLICE]):
                return True
        return False

    def _value_matches(self, value: Any) -> bool:
        if isinstance(value, str):
            if ("string", value) in self.literals:
                return True
            if self.prefixes and value.startswith(self.prefixes):
                return True
            if self.suffixes and value.endswith(self.suffixes):
                return True
            if self.folded and value.casefold() in self.folded:
                return True
        else:
            key = literal_key(value)
            if key is not None and key in self.literals:
                return True
            if self.numeric and key is not None and key[0] == "number":
                number = key[1]
                if any(
                    all(COMPARATORS[op](number, bound) for op, bound in ranges) for ranges in self.numeric
                ):
                    return True
        return bool(self.anything_but) and any(not excluded.hits(value) for excluded in self.anything_but)


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled filter: per key of the event, a nested matcher or the field's alternatives."""

    nested: tuple[tuple[str, Matcher], ...]
    fields: tuple[tuple[str, _Alternatives], ...]

    def matches(self, event: Any, budget: Budget) -> bool:
        """Whether `event` satisfies the filter; TooCostly when the budget runs out first."""
        return finish(self.steps(event, budget))

    def steps(self, event: Any, budget: Budget) -> Steps:
        """`matches` in slices: yields between them, returns the verdict."""
        budget.spend(1)
        get = event.get if isinstance(event, Mapping) else None
        for key, alternatives in self.fields:
            if not (yield from alternatives.steps(_MISSING if get is None else get(key, _MISSING), budget)):
                return False
        for key, matcher in self.nested:
            actual = _MISSING if get is None else get(key, _MISSING)
            if isinstance(actual, list):
                budget.spend(len(actual))
                for i, item in enumerate(actual):
                    if i and not i % SLICE:
                        yield
                    if isinstance(item, Mapping) and (yield from matcher.steps(item, budget)):
                        break
                else:
                    return False
            elif not (isinstance(actual, Mapping) and (yield from matcher.steps(actual, budget))):
                return False
        return True


Steps = Generator[None, None, bool]


def finish(steps: Steps) -> bool:
    """Run matching steps to their verdict without yielding."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return bool(done.value)


def _compile(pattern: Mapping[str, Any]) -> Matcher:
    nested: list[tuple[str, Matcher]] = []
    fields: list[tuple[str, _Alternatives]] = []
    for key, expected in pattern.items():
        if isinstance(expected, Mapping):
            nested.append((key, _compile(expected)))
        else:
            alternatives = _Alternatives()
            for alt in expected:
                alternatives.add(alt)
            fields.append((key, alternatives))
    # Plain fields first: they are cheap, and a miss there spares the nested walks.
    return Matcher(nested=tuple(nested), fields=tuple(fields))


@lru_cache(maxsize=4096)
def _compiled(canonical: bytes) -> Matcher:
    return _compile(codec.decode(canonical, dict[str, Any]))


def compile_pattern(pattern: Mapping[str, Any]) -> Matcher:
    """The matcher of a validated pattern, compiled once per distinct pattern."""
    return _compiled(codec.encode(pattern))
