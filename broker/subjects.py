"""Stream, subject and KV bucket names: the one place that knows how the backbone is addressed."""

from __future__ import annotations

import functools
import re

# JetStream streams (see DESIGN.md § State).
TRIGGERS_STREAM = "TRIGGERS"
INVOKE_STREAM = "INVOKE"
ACTIVATIONS_STREAM = "ACTIVATIONS"
DEADLETTER_STREAM = "DEADLETTER"
# Where services publish the events a namespace's NATS-subject feeds fire on: `events.<ns token>.…`.
EVENTS_STREAM = "EVENTS"

TRIGGERS_SUBJECTS = "trigger.>"
INVOKE_SUBJECTS = "invoke.>"
ACTIVATIONS_SUBJECTS = "activation.>"
DEADLETTER_SUBJECTS = "deadletter.>"
EVENTS_SUBJECTS = "events.>"

# KV buckets. Actions, triggers, rules and packages share one bucket keyed `<ns>.<name>` because
# OpenWhisk names are unique across those collections within a namespace: KV `create` enforces it.
ENTITIES_BUCKET = "squall_entities"
NAMESPACES_BUCKET = "squall_namespaces"
AUTHKEYS_BUCKET = "squall_authkeys"
# JetStream object store for entity bodies too large for one KV value (action code up to 48 MB).
BLOBS_BUCKET = "squall_blobs"
# JetStream object store for activation records too large for one NATS message (broker/large_records.py).
LARGE_RECORDS_BUCKET = "squall_large_records"

# Feed registrations (one per trigger with a feed: what the feed's CREATE configured) and their health (written
# by the feeds role as it fires), kept apart so that firing never races a lifecycle call's write.
FEEDS_BUCKET = "squall_feeds"
FEED_STATUS_BUCKET = "squall_feed_status"
# Webhook delivery ids already fired (broker/webhook_deliveries.py), kept for as long as senders retry.
WEBHOOK_DELIVERIES_BUCKET = "squall_webhook_deliveries"
FEEDS_MEMBERS_BUCKET = "squall_feeds_members"  # the live feeds processes (heartbeats)
# Core NATS subject on which the feeds role serves the lifecycle calls of the catalog's feed actions.
FEED_LIFECYCLE_SUBJECT = "squall.feeds.lifecycle"

# MongoDB collections.
ACTIVATIONS_COLLECTION = "activations"
# Activation counts (broker/activation_counts.py): one total per namespace and entity, and the changes to them
# not yet folded into the totals.
ACTIVATION_COUNTS_COLLECTION = "activation_counts"
ACTIVATION_COUNT_DELTAS_COLLECTION = "activation_count_deltas"
# Small documents about the activations collection: the upkeep lease, the mark that counts are kept.
ACTIVATION_META_COLLECTION = "activation_meta"


_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=8192)
def token(name: str) -> str:
    """Make an entity name safe as one NATS subject token / KV key segment.

    OpenWhisk names may contain spaces, '@', '&' and '.', which NATS subjects forbid or treat as
    separators. Hex-escaping every byte outside [A-Za-z0-9_-] keeps the mapping reversible and injective.
    Cached: the same few names come by on every message, and the invoke subject's "owner/name" always needs
    the escaping loop (the '/'), which cost the rule engine 4% of its CPU per fire.
    """
    if _SAFE_TOKEN.fullmatch(name):
        return name  # the common case, on every hot path: nothing to escape
    out = []
    for ch in name:
        if ch.isascii() and (ch.isalnum() or ch in "_-"):
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode())
    return "".join(out)


def untoken(tok: str) -> str:
    """Inverse of `token`."""
    raw = bytearray()
    i = 0
    while i < len(tok):
        if tok[i] == "=":
            raw.append(int(tok[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(tok[i].encode())
            i += 1
    return raw.decode()


def trigger_subject(namespace: str, trigger: str) -> str:
    return f"trigger.{token(namespace)}.{token(trigger)}"


def invoke_subject(namespace: str, action: str) -> str:
    """`invoke.<ns>.<action>`: a run caused by `namespace` (the one charged for it, whose queue it waits in) of
    `action` (any token: the invoker reads the action from the message, e.g. its "owner/[pkg/]name")."""
    return f"invoke.{token(namespace)}.{token(action)}"


def trigger_filter(namespace: str) -> str:
    """Every trigger event of `namespace`: the subjects of its event queue on TRIGGERS."""
    return f"trigger.{token(namespace)}.>"


def invoke_filter(namespace: str) -> str:
    """Every run caused by `namespace`: the subjects of its queue on INVOKE."""
    return f"invoke.{token(namespace)}.>"


def activation_subject(namespace: str, name: str) -> str:
    return f"activation.{token(namespace)}.{token(name)}"


def activation_filter(namespace: str) -> str:
    """Every activation record of `namespace` on ACTIVATIONS: what a live stream of it reads."""
    return f"activation.{token(namespace)}.>"


def deadletter_subject(namespace: str, letter_id: str | None = None) -> str:
    """`deadletter.<ns>.<id>`: one dead letter, by its first attempt's activation id (broker/dead_letters.py);
    without an id, the filter of every letter of the namespace."""
    return f"deadletter.{token(namespace)}.{'*' if letter_id is None else token(letter_id)}"


def events_prefix(namespace: str) -> str:
    """The subjects under which a namespace's events are published (and its NATS feeds may listen): this prefix
    followed by at least one more token."""
    return f"events.{token(namespace)}."


def entity_key(namespace: str, name: str) -> str:
    """KV key of an entity: `<ns>.<name>` with both parts tokenized (a package path counts as one name)."""
    return f"{token(namespace)}.{token(name)}"


def namespace_prefix(namespace: str) -> str:
    """KV key filter for every entity of one namespace."""
    return f"{token(namespace)}.>"
