"""Feed registrations and their health in JetStream KV: what a feed's CREATE configured, and how it fires.

A registration (one per trigger, key `<ns>.<trigger>`) is written by the lifecycle calls (CREATE, UPDATE, PAUSE,
DELETE…) and by the feeds role when it disables a feed (OpenWhisk's auto-disable rules). Its status (last and next
fire, count, last error) lives in another bucket, written only as the feed fires, so firing never races a
lifecycle call for the same key's revision.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, Final

import msgspec
import nats.js.errors

from broker import codec, subjects
from broker.bus import JetStreamBus, translate
from broker.entities import Action, KeyValue
from broker.entity_store import is_tombstone
from broker.errors import ConcurrentModification, Conflict, NotFound
from broker.params import lookup

# The annotation that makes a `whisk.system` action a feed served by the feeds role, naming its provider.
FEED_PROVIDER_ANNOTATION: Final = "squall-feed"

# Why a feed stopped firing: OpenWhisk's alarms `reason.kind` values, and Squall's for a paused feed.
AUTO: Final = "AUTO"  # disabled by the provider (a 4xx from the fire, past stopDate, fired once, …)
PAUSED: Final = "PAUSED"  # by a PAUSE lifecycle call


class FeedReason(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why a registration is not active (`status.reason` of a READ, as OpenWhisk's alarms have it)."""

    kind: str
    message: str
    statusCode: int | None = None


class FeedRegistration(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One trigger's feed: which provider serves it, what its CREATE (and UPDATEs) configured, who owns it."""

    namespace: str  # the trigger's namespace
    trigger: str  # the trigger's name
    feed: str  # the feed action, fully qualified: "/whisk.system/alarms/alarm"
    provider: str  # "alarm", "interval", "once", "webhook", "natsFeed"
    config: dict[str, Any] = {}  # the provider's validated configuration
    subject: str  # the uuid of the key that registered it: fires are made as this subject
    active: bool = True
    reason: FeedReason | None = None  # set when not active
    created: int = 0  # epoch ms
    updated: int = 0  # epoch ms: OpenWhisk's `dateChanged`


class FeedStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a feed has been firing (beyond OpenWhisk): kept by the feeds role."""

    lastFire: int | None = None  # epoch ms of the last accepted fire (the scheduled instant for alarms)
    nextFire: int | None = None  # epoch ms of the next scheduled fire, when the provider knows it
    fireCount: int = 0
    lastError: str | None = None


class FeedHealth(msgspec.Struct, frozen=True, kw_only=True):
    """A feed's `status`, as its READ lifecycle call answers it."""

    active: bool
    dateChanged: int
    reason: FeedReason | None = None
    lastFire: int | None = None
    nextFire: int | None = None
    fireCount: int = 0
    lastError: str | None = None


def health_of(registration: FeedRegistration, status: FeedStatus) -> FeedHealth:
    """What a feed's READ and the listing show: OpenWhisk's `{active, dateChanged, reason}` and Squall's fire
    history; a feed that is not active has no next fire."""
    return FeedHealth(
        active=registration.active,
        dateChanged=registration.updated,
        reason=registration.reason,
        lastFire=status.lastFire,
        nextFire=status.nextFire if registration.active else None,
        fireCount=status.fireCount,
        lastError=status.lastError,
    )


def feed_provider_of(action: Action, owner: str, system_namespace: str) -> str | None:
    """The provider serving `action` when it is one of the system catalog's feed actions, else None.

    Only actions of the system namespace count: anyone may annotate their own action, but only the catalog's
    reach the feeds role."""
    if owner != system_namespace:
        return None
    provider = lookup(action.annotations, FEED_PROVIDER_ANNOTATION)
    return provider if isinstance(provider, str) and provider else None


def trigger_feed(annotations: Iterable[KeyValue]) -> str | None:
    """The `feed` annotation a trigger created by `wsk trigger create --feed` carries (its feed action)."""
    value = lookup(annotations, "feed")
    return value if isinstance(value, str) else None


class FeedRegistry:
    """Registrations and statuses in KV; `get` answers the revision for `update`'s optimistic concurrency."""

    def __init__(self, bus: JetStreamBus) -> None:
        self.bus = bus

    # -- registrations ----------------------------------------------------------------------------------

    async def get(self, namespace: str, trigger: str) -> tuple[FeedRegistration, int]:
        """The registration of `namespace`'s `trigger` and its revision; NotFound when it has none."""
        kv = await self.bus.kv(subjects.FEEDS_BUCKET)
        key = subjects.entity_key(namespace, trigger)
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            raise NotFound() from None
        except Exception as exc:
            raise translate(exc, f"reading feed {key}") from None
        return codec.decode(entry.value or b"", FeedRegistration), entry.revision or 0

    async def create(self, registration: FeedRegistration) -> int:
        """Store a new registration; Conflict when the trigger already has one."""
        kv = await self.bus.kv(subjects.FEEDS_BUCKET)
        key = subjects.entity_key(registration.namespace, registration.trigger)
        try:
            return int(await kv.create(key, codec.encode(registration)))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise Conflict("The trigger already has a feed.") from None
        except Exception as exc:
            raise translate(exc, f"creating feed {key}") from None

    async def update(self, registration: FeedRegistration, revision: int) -> int:
        """Replace a registration read at `revision`; ConcurrentModification when it changed since."""
        kv = await self.bus.kv(subjects.FEEDS_BUCKET)
        key = subjects.entity_key(registration.namespace, registration.trigger)
        try:
            return int(await kv.update(key, codec.encode(registration), last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise ConcurrentModification() from None
        except Exception as exc:
            raise translate(exc, f"updating feed {key}") from None

    async def delete(self, namespace: str, trigger: str) -> None:
        """Remove a registration and its status (idempotent: a trigger without a feed is left as it is)."""
        key = subjects.entity_key(namespace, trigger)
        for bucket in (subjects.FEEDS_BUCKET, subjects.FEED_STATUS_BUCKET):
            # A purge leaves no history: a deleted feed's configuration is not kept around.
            await self.bus.publish(
                f"$KV.{bucket}.{key}", b"", headers={"KV-Operation": "PURGE", "Nats-Rollup": "sub"}
            )

    async def list(self, namespace: str | None = None) -> builtins.list[FeedRegistration]:
        """Every registration, or those of one namespace, ordered by trigger name."""
        pattern = ">" if namespace is None else subjects.namespace_prefix(namespace)
        found = [
            codec.decode(data, FeedRegistration)
            for data in await self._current(subjects.FEEDS_BUCKET, pattern)
        ]
        return sorted(found, key=lambda reg: (reg.namespace, reg.trigger))

    # -- statuses -----------------------------------------------------------------------------------

    async def status(self, namespace: str, trigger: str) -> FeedStatus:
        kv = await self.bus.kv(subjects.FEED_STATUS_BUCKET)
        try:
            entry = await kv.get(subjects.entity_key(namespace, trigger))
        except nats.js.errors.KeyNotFoundError:
            return FeedStatus()
        except Exception as exc:
            raise translate(exc, "reading a feed's status") from None
        return codec.decode(entry.value or b"", FeedStatus)

    async def put_status(self, namespace: str, trigger: str, status: FeedStatus) -> None:
        kv = await self.bus.kv(subjects.FEED_STATUS_BUCKET)
        try:
            await kv.put(subjects.entity_key(namespace, trigger), codec.encode(status))
        except Exception as exc:
            raise translate(exc, "writing a feed's status") from None

    async def statuses(self, namespace: str | None = None) -> dict[tuple[str, str], FeedStatus]:
        """Every status, or those of one namespace's feeds, by (namespace, trigger)."""
        pattern = ">" if namespace is None else subjects.namespace_prefix(namespace)
        prefix = f"$KV.{subjects.FEED_STATUS_BUCKET}."
        found: dict[tuple[str, str], FeedStatus] = {}
        for msg in await self.bus.last_per_subject(f"KV_{subjects.FEED_STATUS_BUCKET}", prefix + pattern):
            if is_tombstone(msg.headers):
                continue
            ns_token, _, trigger_token = msg.subject[len(prefix) :].partition(".")
            key = (subjects.untoken(ns_token), subjects.untoken(trigger_token))
            found[key] = codec.decode(msg.data, FeedStatus)
        return found

    async def _current(self, bucket: str, pattern: str) -> builtins.list[bytes]:
        prefix = f"$KV.{bucket}."
        await self.bus.kv(bucket)  # a missing bucket is Unavailable, not NotFound
        return [
            msg.data
            for msg in await self.bus.last_per_subject(f"KV_{bucket}", prefix + pattern)
            if not is_tombstone(msg.headers)
        ]
