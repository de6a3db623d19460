"""What a log line is about (role, namespace, activation id, trace id), and the JSON-lines log format.

The context lives in context variables: a role sets its name once (the tasks it starts inherit it), a handler
sets the activation it works on for the duration of that work. `SQUALL_LOG_FORMAT=json` writes each record
as one JSON object per line with these fields; the default stays human-readable.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from broker import trace_context

_role: ContextVar[str] = ContextVar("squall_role", default="")
# (namespace, activation id, trace id) of the work in progress: one tuple, set once per message.
_work: ContextVar[tuple[str, str, str]] = ContextVar("squall_work", default=("", "", ""))

_encode = msgspec.json.Encoder(enc_hook=repr).encode  # an `extra=` value JSON cannot hold: its repr
# The attributes every LogRecord has: anything else was passed as `extra=` and is kept.
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def set_role(role: str) -> None:
    """Name the role of the current task and of every task it starts from now on."""
    _role.set(role)


@contextlib.contextmanager
def working_on(namespace: str, activation_id: str, traceparent: str = "") -> Iterator[None]:
    """Log lines written inside the block name this activation (and its trace)."""
    token = _work.set((namespace, activation_id, trace_context.trace_id(traceparent)))
    try:
        yield
    finally:
        _work.reset(token)


def fields() -> dict[str, str]:
    """The current context's fields, the empty ones left out."""
    namespace, activation_id, trace_id = _work.get()
    found = {"role": _role.get(), "namespace": namespace, "activationId": activation_id, "traceId": trace_id}
    return {key: value for key, value in found.items() if value}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context's fields, `extra=` values, and the
    exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **fields(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def json_handler(stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) writing JSON lines."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler
