"""The one codec: every record goes to and from bytes (JSON) or builtins (BSON documents) through here."""

from __future__ import annotations

from collections.abc import Hashable
from functools import cache
from typing import Any, Final, TypeVar, cast

import msgspec

from broker.errors import BadRequest

T = TypeVar("T")


def _encode_foreign(value: Any) -> Any:
    # MongoDB hands 64-bit integers back as bson.Int64, an int subclass msgspec will not encode itself.
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_encode_foreign)


TOO_DEEP: Final = "The request content was malformed:\nThe JSON is nested too deeply."


def encode(value: object) -> bytes:
    """Encode a Struct (or builtins) as compact JSON."""
    return _encoder.encode(value)


@cache
def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    # Decoders are built once per type: building one is far costlier than using it.
    return msgspec.json.Decoder(type_)


def decode(data: bytes | str, type_: type[T]) -> T:
    """Decode JSON into `type_`; malformed or mistyped input is the client's mistake (400)."""
    try:
        decoded: T = _decoder(cast(Hashable, type_)).decode(data)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request content was malformed:\n{exc}") from None
    except RecursionError:
        raise BadRequest(TOO_DEEP) from None
    return decoded


def decode_json(data: bytes) -> Any:
    """Any JSON value, e.g. a request body; not JSON, or nested past the decoder's depth (about 1,000 levels,
    where msgspec stops rather than exhaust the stack), is the client's mistake (400)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise BadRequest("The request content was malformed:\nThe body is not valid JSON.") from None
    except RecursionError:
        raise BadRequest(TOO_DEEP) from None


def to_builtins(value: object) -> Any:
    """A Struct as plain dicts/lists, e.g. for a MongoDB document."""
    return msgspec.to_builtins(value)
