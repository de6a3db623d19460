"""The NATS-subject feed (Squall's answer to OpenWhisk's Kafka feed), pure: which subjects a namespace's feed may
read, and how a message becomes a fire.

Services publish a namespace's events on `events.<ns token>.…` (subjects.events_prefix; the namespace escaped by
subjects.token), stored by the EVENTS stream. A feed's `subject` must lie under its own namespace's prefix, with
NATS wildcards (`*` a token, `>` the rest) allowed after it. Each message fires the trigger once: a JSON object
is the payload as it is; other UTF-8 text arrives as `{"payload": <text>}` (a JSON array or number as its text),
other bytes as `{"payload_base64": <base64>}`. The message's subject and headers reach the actions in
`__ow_headers` (`nats-subject`, and each header lowercased).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from broker import subjects
from broker.errors import BadRequest
from broker.feed_registry import FeedRegistration

PROVIDER: Final = "natsFeed"
SUBJECT_MAX: Final = 256
DURABLE_PREFIX: Final = "natsfeed-"
SUBJECT_HEADER: Final = "nats-subject"
_FORBIDDEN: Final = frozenset(" \t\r\n\0")


def check_subject(namespace: str, subject: object) -> str:
    """`subject` when a feed of `namespace` may read it, else BadRequest naming the allowed prefix."""
    prefix = subjects.events_prefix(namespace)
    example = f"e.g. '{prefix}orders.>'"
    if not isinstance(subject, str) or not subject:
        raise BadRequest(f"The parameter 'subject' is required: a NATS subject under '{prefix}', {example}.")
    if len(subject) > SUBJECT_MAX:
        raise BadRequest(f"The subject is longer than {SUBJECT_MAX} characters.")
    if not subject.startswith(prefix):
        raise BadRequest(
            f"The subject '{subject}' is not allowed: this namespace's feeds read subjects under '{prefix}' "
            f"only, {example}."
        )
    rest = subject[len(prefix) :].split(".")
    for index, part in enumerate(rest):
        wildcard_ok = part in ("*", ">") and (part == "*" or index == len(rest) - 1)
        if (
            not part
            or any(ch in _FORBIDDEN for ch in part)
            or (("*" in part or ">" in part) and not wildcard_ok)
        ):
            raise BadRequest(
                f"The subject '{subject}' is malformed: tokens after '{prefix}' must be non-empty, without "
                f"spaces; '*' stands for one whole token and '>' only for the last, {example}."
            )
    return subject


def durable_of(registration: FeedRegistration) -> str:
    """The durable consumer of a registration: a trigger re-created with a new feed gets a fresh one."""
    identity = f"{registration.namespace}\x1f{registration.trigger}\x1f{registration.created}"
    return DURABLE_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:32]


def message_payload(data: bytes) -> dict[str, Any]:
    """The payload a message fires with (see the module's docstring)."""
    if data.lstrip().startswith(b"{"):
        try:
            decoded = msgspec.json.decode(data)
        except msgspec.DecodeError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
    try:
        return {"payload": data.decode()}
    except UnicodeDecodeError:
        return {"payload_base64": base64.b64encode(data).decode()}


def message_key(msg_id: str | None, stream_seq: int) -> str:
    """The fire's idempotency key: the publisher's `Nats-Msg-Id` when set, else the message's place in EVENTS,
    so a redelivered message fires with the same activation id (and TRIGGERS stores it once)."""
    return f"nats-msg:{msg_id}" if msg_id else f"events-seq:{stream_seq}"


def message_headers(subject: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    return {**{name.lower(): value for name, value in (headers or {}).items()}, SUBJECT_HEADER: subject}


def throttle_delay(now_ms: int) -> float:
    """How long a throttled message waits: fires are counted per calendar minute, so until the next one."""
    return max(1.0, 60.0 - (now_ms % 60_000) / 1000)


class NatsFeedProvider:
    """Feed `natsFeed`: parameter `subject` (under `events.<namespace>.`). An UPDATE may change it."""

    name = PROVIDER

    def configure(
        self, params: Mapping[str, Any], previous: Mapping[str, Any] | None, now_ms: int
    ) -> dict[str, Any]:
        """The subject is checked by `check_scope`, which knows the namespace (and so the allowed prefix)."""
        subject = params.get("subject", (previous or {}).get("subject"))
        return {} if subject is None else {"subject": subject}

    def check_scope(self, namespace: str, config: Mapping[str, Any]) -> None:
        check_subject(namespace, config.get("subject"))

    def answer(self, registration: FeedRegistration) -> dict[str, Any]:
        return {"subject": registration.config.get("subject")}
