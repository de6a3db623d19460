"""The fan-out's per-stream bookkeeping: an inbox never holds more than its window and never blocks the reader,
and a stream hands out each position once, in order, whichever reader it came from."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

from broker.activation_fanout import WINDOW_BYTES, Inbox
from broker.activation_feed import Start
from broker.activation_filter import NO_FILTER
from broker.activation_source import ActivationSource


def inbox(window: int, position: int = 10) -> tuple[Inbox, list[None]]:
    calls: list[None] = []
    reader: Any = SimpleNamespace(position=position)
    return Inbox(reader, NO_FILTER, window, lambda: calls.append(None)), calls


def test_an_inbox_holds_its_window_then_overflows_without_waiting() -> None:
    box, notices = inbox(window=2)
    assert box.attach_at == 10
    box.offer((11, b"a"))
    box.offer((12, b"b"))
    assert not box.overflowed
    box.offer((13, b"c"))  # full: marked, not kept
    box.offer((14, b"d"))  # overflowed: ignored
    assert box.overflowed and list(box.items) == [(11, b"a"), (12, b"b")]
    assert (
        len(notices) == 2
    )  # the stream hears of the first record (it takes all at once) and of the overflow
    box.items.clear()


def source(after: int | None) -> ActivationSource:
    readers: Any = SimpleNamespace(bus=None, store=None, render=lambda p, d: d)
    return ActivationSource(readers, "ns", NO_FILTER, Start(after=after), window=4)


def test_a_stream_hands_out_each_position_once_in_order() -> None:
    s = source(after=5)
    # What a catch-up reader and the live inbox both had (the overlap of a hand-over) goes out once.
    assert s._drain(deque([(4, b"old"), (6, b"x"), (7, b"y")])) == [(6, b"x"), (7, b"y")]
    assert s._drain(deque([(7, b"y"), (8, b"z")])) == [(8, b"z")]
    assert s._drain(deque([(8, b"z")])) == []
    assert s.position == 8 and s.held == 3  # the most held at once


def test_an_inbox_holds_at_most_its_bytes_but_always_one_event() -> None:
    big = b"x" * (WINDOW_BYTES // 2 + 1)
    box, _ = inbox(window=64)
    box.offer((11, big))
    box.offer((12, big))  # two would pass the byte bound
    assert box.overflowed and [p for p, _ in box.items] == [11]
    alone, _ = inbox(window=64)
    alone.offer((11, b"y" * (WINDOW_BYTES + 1)))  # larger than the bound, but the stream must make progress
    assert not alone.overflowed and len(alone.items) == 1
