"""Namespaces, their API keys (stored hashed) and their limits; key hashing and checking are pure."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid as uuidlib

import msgspec

from broker.clock import now_ms
from broker.errors import BadRequest, Unauthorized

_KEY_ALPHABET = string.ascii_letters + string.digits
KEY_SECRET_LENGTH = 64


class NamespaceLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-namespace overrides of the system limits; `None` means "the system default"."""

    invocationsPerMinute: int | None = None
    concurrentInvocations: int | None = None
    firesPerMinute: int | None = None
    activationRetentionDays: int | None = None  # how long its activation records are kept
    maxEntities: int | None = None  # actions + triggers + rules + packages it may hold
    maxDeadLetters: int | None = None  # dead letters kept; past it the oldest are dropped


class AuthKey(msgspec.Struct, frozen=True, kw_only=True):
    """One API key of a namespace. Only a salted hash of the secret part is kept."""

    uuid: str
    namespace: str
    salt: str
    secret_hash: str
    created: int  # epoch ms


class Namespace(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    limits: NamespaceLimits = NamespaceLimits()
    created: int = 0  # epoch ms


def split_key(key: str) -> tuple[str, str]:
    """Split "uuid:secret"; the uuid part must be a UUID (it is the lookup handle)."""
    uuid_part, sep, secret = key.partition(":")
    if not sep or not secret:
        raise Unauthorized()
    try:
        uuidlib.UUID(uuid_part)
    except ValueError:
        raise Unauthorized() from None
    return uuid_part, secret


def hash_secret(secret: str, salt: str) -> str:
    # Keys are 64 random alphanumerics (~380 bits), so a slow password hash buys nothing;
    # a salted SHA-256 keeps stolen hashes useless and auth cheap on every request.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def make_auth_key(namespace: str, key: str | None = None) -> tuple[AuthKey, str]:
    """A stored key record and the plain "uuid:secret" to show once. `key` imports an existing key."""
    if key is None:
        secret = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(KEY_SECRET_LENGTH))
        key = f"{uuidlib.uuid4()}:{secret}"
    try:
        uuid_part, secret = split_key(key)
    except Unauthorized:
        raise BadRequest("an API key must look like '<uuid>:<secret>'") from None
    salt = secrets.token_hex(16)
    record = AuthKey(
        uuid=uuid_part,
        namespace=namespace,
        salt=salt,
        secret_hash=hash_secret(secret, salt),
        created=now_ms(),
    )
    return record, key


def key_matches(record: AuthKey, secret: str) -> bool:
    """Constant-time check of a presented secret against a stored key record."""
    return hmac.compare_digest(hash_secret(secret, record.salt), record.secret_hash)
