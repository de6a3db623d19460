"""W3C trace context: parsing a caller's header, starting a trace, the child each hop passes on."""

from __future__ import annotations

import pytest

from broker import trace_context
from broker.entities import KeyValue
from broker.firing import trace_of

SAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_header_is_kept() -> None:
    assert trace_context.parse(SAMPLE) == SAMPLE
    assert trace_context.parse(f"  {SAMPLE.upper()} ") == SAMPLE


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # the forbidden version
        f"{SAMPLE}-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  # not hex
    ],
)
def test_an_invalid_header_is_refused(header: str | None) -> None:
    assert trace_context.parse(header) is None


def test_a_later_version_is_read_as_version_00() -> None:
    later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
    assert trace_context.parse(later) == SAMPLE


def test_accept_starts_a_trace_for_none_or_an_invalid_one() -> None:
    assert trace_context.accept(SAMPLE) == SAMPLE
    started = trace_context.accept("nonsense")
    assert trace_context.parse(started) == started
    assert trace_context.trace_id(started) != trace_context.trace_id(trace_context.accept(None))


def test_a_child_keeps_the_trace_and_flags_under_a_new_span() -> None:
    child = trace_context.child(SAMPLE)
    assert trace_context.parse(child) == child
    assert trace_context.trace_id(child) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_context.span_id(child) != trace_context.span_id(SAMPLE)
    assert child.endswith("-01")
    assert trace_context.child("") == ""


def test_ids_of_nothing_are_empty() -> None:
    assert trace_context.trace_id("") == ""
    assert trace_context.span_id("") == ""


def test_records_are_annotated_only_with_a_trace() -> None:
    assert trace_context.annotated("", []) == []
    assert trace_context.annotated(SAMPLE, [KeyValue(key="path", value="p")])[-1] == KeyValue(
        key="traceId", value="4bf92f3577b34da6a3ce929d0e0e4736"
    )


def test_a_fire_continues_its_producers_trace_or_starts_one() -> None:
    assert trace_context.trace_id(trace_of(SAMPLE, True)) == trace_context.trace_id(SAMPLE)
    assert trace_context.parse(trace_of("", True)) is not None
    assert trace_of(SAMPLE, False) == ""
