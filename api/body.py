"""Reading request bodies and query parameters: size limits, empty-as-`{}`, and 400s in OpenWhisk's words."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from broker import codec
from broker.errors import BadRequest, PayloadTooLarge
from broker.limits import too_large_message

T = TypeVar("T")

MB = 1024 * 1024
# OpenWhisk's HTTP max-content-length; finer limits (1 MB payloads, 48 MB code) are checked per field.
MAX_REQUEST_BYTES = 50 * MB


async def read_bytes(request: Request, max_bytes: int = MAX_REQUEST_BYTES) -> bytes:
    """The raw body, refused with 413 as soon as it passes `max_bytes` (without buffering the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(too_large_message(int(declared), max_bytes))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(too_large_message(size, max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, type_: type[T], max_bytes: int = MAX_REQUEST_BYTES) -> T:
    """Decode the body into `type_`; an empty body counts as `{}` like OpenWhisk."""
    raw = await read_bytes(request, max_bytes)
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"The request content was malformed:\n{exc}") from None
    except msgspec.DecodeError:
        raise BadRequest("The request content was malformed:\nThe body is not valid JSON.") from None
    except RecursionError:
        raise BadRequest(codec.TOO_DEEP) from None


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"The query parameter '{name}' must be true or false, not '{raw}'.")


def query_int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"The query parameter '{name}' must be an integer, not '{raw}'.") from None
