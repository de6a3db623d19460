"""W3C Trace Context (`traceparent`): parsing a caller's, starting one, and the child each hop passes on.

A fire, an invoke or a webhook delivery carries one `traceparent` (W3C Trace Context level 1,
`00-<trace id>-<parent id>-<flags>`); every message downstream of it (trigger event, invocation, retry, dead
letter, sequence component) carries a child of it: the same trace id, the span id of the hop that made it.
Records keep the trace id in their `traceId` annotation, and actions get it as `__OW_TRACE_ID` and the whole
header as `__OW_TRACEPARENT`. These are pure functions on strings: no tracing library is needed to carry one.
"""

from __future__ import annotations

import os
import re
from typing import Final

from broker.entities import KeyValue

# The HTTP header (and CloudEvents' distributed-tracing extension attribute) that carries it.
TRACEPARENT_HEADER: Final = "traceparent"
# The annotation of an activation record that names its trace.
TRACE_ID_ANNOTATION: Final = "traceId"

_VERSION: Final = "00"
_SAMPLED: Final = "01"
# Version 00 exactly; a later version's first four fields are read alike (the spec's forward compatibility).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_INVALID_TRACE: Final = "0" * 32
_INVALID_SPAN: Final = "0" * 16


def parse(header: str | None) -> str | None:
    """The caller's `traceparent` normalised to version 00, or None when absent or invalid (a new trace is
    then started, as the spec asks of a receiver that cannot read it)."""
    if not header:
        return None
    found = _TRACEPARENT.fullmatch(header.strip().lower())
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == _VERSION and rest) or trace_id == _INVALID_TRACE:
        return None
    if span_id == _INVALID_SPAN:
        return None
    return f"{_VERSION}-{trace_id}-{span_id}-{flags}"


def start() -> str:
    """A new sampled trace, for a request that came without one."""
    return f"{_VERSION}-{os.urandom(16).hex()}-{os.urandom(8).hex()}-{_SAMPLED}"


def accept(header: str | None) -> str:
    """The caller's trace when it sent a valid one, else a new one."""
    return parse(header) or start()


def child(traceparent: str) -> str:
    """The same trace under a new span: what a hop passes on to the next. Empty stays empty (tracing off)."""
    if not traceparent:
        return ""
    return f"{traceparent[:36]}{os.urandom(8).hex()}{traceparent[52:]}"


def trace_id(traceparent: str) -> str:
    """The 32-hex trace id of a well-formed `traceparent`, "" for none."""
    return traceparent[3:35] if len(traceparent) >= 55 else ""


def span_id(traceparent: str) -> str:
    """The 16-hex parent (span) id of a well-formed `traceparent`, "" for none."""
    return traceparent[36:52] if len(traceparent) >= 55 else ""


def annotated(traceparent: str, annotations: list[KeyValue]) -> list[KeyValue]:
    """`annotations` with the record's `traceId` appended (in place) when it has a trace."""
    trace = trace_id(traceparent)
    if trace:
        annotations.append(KeyValue(key=TRACE_ID_ANNOTATION, value=trace))
    return annotations
