"""Callers' API keys sealed for the invoker that runs their action: never in plaintext in a stored message.

An invocation that carries its caller's key (for an action annotated `provide-api-key`, or a sequence whose
components may be) sits on the INVOKE stream on disk, and a failed one in a dead letter. The API seals the key
with AES-256-GCM under `Settings.invocation_secret`, a key only the APIs and the invokers hold; the invoker opens
it just before handing it to the action. The invoking namespace is the associated data, so a sealed key copied
into another namespace's invocation does not open. Without a secret no key is carried at all: actions that ask
for one run without it, rather than a key being stored in the clear.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION: Final = "v1."  # a prefix, so a later scheme can be told apart from this one
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


def new_secret() -> str:
    """A fresh secret for `SQUALL_INVOCATION_SECRET`: 32 random bytes, base64url."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def decode_secret(secret: str) -> bytes:
    """The key bytes of a secret; ValueError when it is not 32 bytes in base64url."""
    try:
        key = base64.urlsafe_b64decode(secret.strip().encode())
    except (binascii.Error, ValueError):
        raise ValueError("the invocation secret must be base64url") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the invocation secret must be {KEY_BYTES} bytes, base64url-encoded")
    return key


class KeySeal:
    """Seals and opens API keys under one secret."""

    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(decode_secret(secret))

    def seal(self, api_key: str, namespace: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, api_key.encode(), namespace.encode())
        return VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, namespace: str) -> str | None:
        """The key, or None for anything that does not open under this secret for this namespace (another
        secret, another namespace, a plaintext key from an earlier version, tampering)."""
        if not sealed.startswith(VERSION):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(VERSION) :].encode())
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], namespace.encode())
            return plain.decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            return None


@functools.lru_cache(maxsize=4)
def key_seal(secret: str) -> KeySeal | None:
    """The seal of a secret (made once: roles share it), or None when no secret is set."""
    return KeySeal(secret) if secret else None
