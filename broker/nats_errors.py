"""The adapter boundary to nats-py: its exceptions as the broker's error hierarchy, and URLs fit to show."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors

from broker.errors import (
    BackboneUnavailable,
    BadRequest,
    ConcurrentModification,
    InternalError,
    NotFound,
    SquallError,
    StorageFull,
)

STREAM_EXISTS_DIFFERENTLY = 10058  # JSStreamNameExistErr: same name, other config
_WRONG_LAST_SEQUENCE = (10071, 10164)
# JSStreamStoreFailedF as a full stream with discard-new answers it ("maximum bytes exceeded", also for
# messages and per-subject bounds).
STREAM_FULL = 10077


def redact(url: str) -> str:
    """A NATS URL (or a comma-separated list of them) fit for a log line or an error message: credentials
    removed."""
    if "," in url:
        return ",".join(redact(part.strip()) for part in url.split(",") if part.strip())
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def translate(exc: BaseException, doing: str) -> SquallError:
    """Map a nats-py exception to the broker's error hierarchy (the adapter boundary)."""
    if isinstance(exc, SquallError):
        return exc
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return ConcurrentModification()
    if getattr(exc, "err_code", None) == STREAM_FULL or "maximum bytes exceeded" in str(exc):
        return StorageFull(f"{StorageFull.default_message} ({doing}: the store is full)")
    if isinstance(exc, nats.js.errors.NotFoundError):  # includes KeyNotFound/KeyDeleted
        return NotFound()
    # The KV error subclasses skip APIError.__init__, so their attributes may be missing.
    if getattr(exc, "err_code", None) in _WRONG_LAST_SEQUENCE:
        return ConcurrentModification()
    if isinstance(exc, nats.js.errors.InvalidKeyError):
        return BadRequest(f"{doing}: invalid key")
    if isinstance(
        exc,
        (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.NoServersError,
            nats.js.errors.NoStreamResponseError,
            nats.js.errors.ServiceUnavailableError,
            asyncio.TimeoutError,
            OSError,
        ),
    ):
        return BackboneUnavailable(f"{doing}: NATS unavailable ({describe(exc)})")
    return InternalError(f"{doing}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
