"""Basic authentication against hashed namespace keys, and the caller's view of namespaces (`_`)."""

from __future__ import annotations

import base64
from typing import Protocol

import msgspec
from starlette.requests import Request

from broker.entities import validate_name
from broker.errors import Forbidden, Unauthorized
from broker.namespaces import AuthKey, key_matches, make_auth_key, split_key

OWN_NAMESPACE = "_"
_DUMMY_KEY: AuthKey = make_auth_key("_", "00000000-0000-0000-0000-000000000000:x")[0]


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the namespace the key belongs to, and the key's uuid (the subject)."""

    namespace: str
    uuid: str

    def resolve(self, namespace: str) -> str:
        """The namespace a path names, with `_` meaning the caller's own; another one is forbidden."""
        if namespace in (OWN_NAMESPACE, self.namespace):
            return self.namespace
        raise Forbidden()

    def resolve_for_read(self, namespace: str) -> tuple[str, bool]:
        """The namespace a path names and whether the caller owns it. Unlike `resolve` this allows other
        namespaces, for the reads OpenWhisk permits there (published packages and their actions)."""
        if namespace in (OWN_NAMESPACE, self.namespace):
            return self.namespace, True
        return validate_name(namespace, "namespace"), False


def credentials_of(authorization: str | None) -> tuple[str, str]:
    """The (uuid, secret) of a Basic `Authorization` header; anything else is unauthorized."""
    if not authorization:
        raise Unauthorized()
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error, and non-ASCII text in the header
        raise Unauthorized() from None
    return split_key(decoded)


class _KeyLookup(Protocol):
    async def find_key(self, uuid: str) -> AuthKey | None: ...


async def authenticate(request: Request, keys: _KeyLookup) -> Identity:
    uuid, secret = credentials_of(request.headers.get("authorization"))
    record = await keys.find_key(uuid)
    # Compare even when the uuid is unknown, so timing does not reveal which uuids exist.
    if record is None:
        key_matches(_DUMMY_KEY, secret)
        raise Unauthorized()
    if not key_matches(record, secret):
        raise Unauthorized()
    return Identity(namespace=record.namespace, uuid=record.uuid)
