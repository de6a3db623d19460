"""A serving process's start heap is set aside from collections; garbage made afterwards is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from squall import heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_freezes_what_exists_and_later_cycles_are_still_collected(unfrozen: None) -> None:
    kept = [Node() for _ in range(100)]
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)
    assert not any(gc.is_tracked(node) and node in gc.get_objects() for node in kept[:3])

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None, "a cycle made after settling is garbage as before"
