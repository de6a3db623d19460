"""The JetStream bus: one NATS connection, the topology applied to it, and publishing within the message limit.

Every other module talks to NATS through this one: it alone knows the server's message size limit
(`encode`), creates streams, buckets and consumers (`provision`, from broker/topology.py) and translates
nats-py's exceptions into the broker's (broker/nats_errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from broker import codec, patient_kv
from broker.config import Settings
from broker.errors import BackboneUnavailable, PayloadTooLarge, SquallError, Unavailable
from broker.jetstream_records import (
    ConsumerState,
    Outgoing,
    PubAck,
    ack_result,
    consumer_config,
    consumer_state,
    stream_config,
)
from broker.limits import too_large_message
from broker.nats_errors import STREAM_EXISTS_DIFFERENTLY, describe, redact, translate
from broker.topology import BucketSpec, ConsumerSpec, ObjectStoreSpec, StreamSpec, topology

__all__ = ["ConsumerState", "JetStreamBus", "Outgoing", "PubAck", "redact", "stream_config", "translate"]

log = logging.getLogger(__name__)

H = TypeVar("H")  # a bucket handle: KeyValue or ObjectStore
R = TypeVar("R")  # a record to publish

RECONNECT_WAIT_S = 2.0
_BOOT_RETRY_WAIT_S = 0.2
MAX_IN_FLIGHT = 4096  # unacknowledged async publishes before publishers wait
# A publish that carries a msg id is sent again while its acknowledgement is missing, this often, until the
# request timeout: the stream leader that held it may have died with it, or the connection it went out on. The
# msg id makes a copy of one already stored a duplicate that JetStream drops, so waiting out the whole timeout
# for an acknowledgement that cannot come is not needed.
RESEND_AFTER_S = 1.0
# How long `publish_until_stored` outlasts a stream that cannot store: a cluster's election after a node died
# takes a few seconds.
STORE_PATIENCE_S = 30.0
# A listing's ephemeral consumer outlives its unsubscribe by this long on the server; short, so a busy API
# listing many times a second does not pile up consumers.
SCAN_CONSUMER_TTL_S = 5.0
SCAN_BATCH = 256
# How often an idle `follow` hears from its consumer. Its consumer lives on one server (R1, in memory): when
# that server dies, nats-py notices two silent beats later and recreates it from the last sequence seen, on a
# live server. Short, so a KV watch is blind for ~2 s rather than nats-py's default ~10 s.
FOLLOW_HEARTBEAT_S = 1.0
CONSUMER_LIST_PAGE = 256  # the server's page size when listing consumers
# What a shrunk record must leave free of the limit for the message's headers (msg id, reply subject).
HEADROOM_BYTES = 512


class JetStreamBus:
    """One NATS connection and its JetStream context; use as `async with JetStreamBus(settings) as bus`."""

    def __init__(
        self,
        settings: Settings | str,
        *,
        name: str = "squall",
        connect_timeout: float = 2.0,
        request_timeout: float = 5.0,
    ) -> None:
        self.settings = settings if isinstance(settings, Settings) else Settings(nats_url=settings)
        self.url = self.settings.nats_url
        self.name = name
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._kv: dict[str, KeyValue] = {}
        self._objects: dict[str, ObjectStore] = {}
        self._last_error: Exception | None = None
        # Our own async-publish multiplexer: nats-py's publish_async never resolves a future whose
        # reply is a JetStream error (the error is raised inside its callback), so it would hang.
        self._ack_prefix = ""
        self._acks: dict[str, _Unacked] = {}  # by the token that ends its reply subject
        self._resending: set[asyncio.Task[None]] = set()
        self._ack_ids = itertools.count()
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> JetStreamBus:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        if not self.url:
            raise Unavailable("no NATS URL configured (SQUALL_NATS_URL)")
        try:
            # Fail fast at boot so a wrong URL is one clear line. nats-py retries inside its server
            # selection whatever allow_reconnect says; 1 is its smallest finite budget (0 = forever). With a
            # cluster's several URLs, each is tried in turn: one server down at boot is not a failure.
            nc = await nats.connect(
                self.settings.nats_servers,
                name=self.name,
                connect_timeout=self.connect_timeout,
                max_reconnect_attempts=1,
                reconnect_time_wait=_BOOT_RETRY_WAIT_S,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except Exception as exc:
            # nats-py ends with a generic NoServersError; the attempt's own error says what went wrong.
            cause = self._last_error if isinstance(exc, nats.errors.NoServersError) else None
            reason = describe(cause or exc)
            raise Unavailable(f"cannot reach NATS at {redact(self.url)}: {reason}") from None
        # Once up, a server role must ride out NATS restarts: reconnect forever (options are read live).
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = RECONNECT_WAIT_S
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout)
        self._ack_prefix = nc.new_inbox()
        await nc.subscribe(f"{self._ack_prefix}.*", cb=self._on_ack)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._kv.clear()
        self._objects.clear()
        if nc is None or nc.is_closed:
            return
        deadline = self.settings.drain_timeout_s
        try:
            # In-flight publishes first: their acks arrive on a subscription that drain would end.
            if self._acks:
                await asyncio.wait([unacked.ack for unacked in self._acks.values()], timeout=deadline)
            await asyncio.wait_for(nc.drain(), deadline)
        except (TimeoutError, ConnectionError, nats.errors.Error) as exc:
            log.warning("NATS drain did not finish cleanly: %s", describe(exc))
        finally:
            for unacked in self._acks.values():
                if not unacked.ack.done():
                    unacked.ack.set_exception(Unavailable("publish not acknowledged before shutdown"))
            self._acks.clear()
            for task in self._resending:
                task.cancel()
            if not nc.is_closed:
                # A server that went away meanwhile leaves nothing to flush: closing must neither fail on it
                # nor wait for it (nats-py's close can wait on a reconnection that will not come).
                with contextlib.suppress(ConnectionError, nats.errors.Error, TimeoutError):
                    await asyncio.wait_for(nc.close(), deadline)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        # Boot failures are reported once, by connect(); later ones are news for the operator.
        level = logging.WARNING if self._nc is not None else logging.DEBUG
        log.log(level, "NATS %s: %s", redact(self.url), describe(exc))

    async def _on_disconnected(self) -> None:
        if self._nc is not None:  # not our own close()
            log.warning("NATS %s: disconnected", redact(self.url))

    async def _on_reconnected(self) -> None:
        log.info("NATS %s: reconnected", redact(self.url))

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise Unavailable("the JetStream bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise Unavailable("the JetStream bus is not connected")
        return self._js

    # -- provisioning ------------------------------------------------------------------------------

    async def provision(self) -> None:
        """Apply the topology (broker/topology.py): every stream, bucket, object store and durable consumer is
        created or brought to its declared configuration; safe on every boot and concurrently."""
        shape = topology(self.settings)
        for stream in shape.streams:
            await self.provision_stream(stream)
        for bucket in shape.buckets:
            await self.provision_bucket(bucket)
        for objects in shape.object_stores:
            await self.provision_object_store(objects)
        for stream_name, durable in shape.retired_consumers:
            await self.delete_consumer(stream_name, durable)
        for consumer in shape.consumers:
            await self.provision_consumer(consumer)

    async def provision_stream(self, spec: StreamSpec) -> None:
        config = stream_config(spec)
        try:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_EXISTS_DIFFERENTLY:
                    raise
                await self.js.update_stream(config)
        except Exception as exc:
            raise translate(exc, f"provisioning stream {spec.name}") from None

    async def provision_bucket(self, spec: BucketSpec) -> KeyValue:
        bucket = spec.name
        # Reads served by any replica ("direct") only when there is one: a follower may answer with a value
        # older than a write already acknowledged, and a cache would keep it (a cluster ran a rule made
        # inactive just before, for every fire, from one such read).
        direct = spec.replicas == 1
        await self._create_or_bind(
            f"bucket {bucket}",
            self.js.create_key_value(
                bucket=bucket,
                history=1,
                ttl=spec.ttl_s,
                max_bytes=spec.max_bytes,
                storage=api.StorageType.FILE,
                replicas=spec.replicas,
                direct=direct,
            ),
            lambda: self.js.key_value(bucket),
        )
        await self._reconcile(f"KV_{bucket}", spec.max_bytes, spec.ttl_s, direct=direct)
        # Made after the reconciliation, which left the bucket read as `direct` says.
        self._kv[bucket] = kv = patient_kv.handle(
            self.js, bucket, direct=direct, patience_s=self.request_timeout
        )
        return kv

    async def provision_object_store(self, spec: ObjectStoreSpec) -> None:
        config = api.ObjectStoreConfig(
            storage=api.StorageType.FILE, replicas=spec.replicas, ttl=spec.max_age_s, max_bytes=spec.max_bytes
        )
        self._objects[spec.name] = await self._create_or_bind(
            f"object store {spec.name}",
            self.js.create_object_store(spec.name, config),
            lambda: self.js.object_store(spec.name),
        )
        await self._reconcile(f"OBJ_{spec.name}", spec.max_bytes, spec.max_age_s)

    async def _reconcile(
        self, stream: str, max_bytes: int | None, max_age_s: float | None, *, direct: bool | None = None
    ) -> None:
        """Bring the bounds (and, for a KV bucket, the direct reads) of a bucket's stream to the topology's: a
        bucket made by an earlier version (or with other settings) is bound as it is, and would otherwise keep
        growing unbounded, or keep reads that may be stale."""
        try:
            config = (await self.js.stream_info(stream)).config
            want_bytes = max_bytes if max_bytes is not None else -1
            want_age = max_age_s or 0.0
            want_direct = bool(config.allow_direct) if direct is None else direct
            if (
                (config.max_bytes or -1) != want_bytes
                or (config.max_age or 0.0) != want_age
                or bool(config.allow_direct) != want_direct
            ):
                await self.js.update_stream(
                    config.evolve(max_bytes=want_bytes, max_age=want_age, allow_direct=want_direct)
                )
        except Exception as exc:
            raise translate(exc, f"reconciling {stream}") from None

    async def provision_consumer(self, spec: ConsumerSpec) -> None:
        """Create a durable consumer, or bring an existing one to `spec` keeping its position (JetStream's
        create is create-or-update for the fields that may change, such as the ack wait)."""
        try:
            await self.js.add_consumer(spec.stream, consumer_config(spec))
        except Exception as exc:
            raise translate(exc, f"provisioning consumer {spec.durable} on {spec.stream}") from None

    async def delete_consumer(self, stream: str, durable: str) -> None:
        """Remove a durable consumer if it exists (its stream's messages stay)."""
        try:
            await self.js.delete_consumer(stream, durable)
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            raise translate(exc, f"removing consumer {durable} of {stream}") from None

    async def consumers(self, stream: str) -> list[ConsumerState]:
        """Every durable consumer of `stream`, with its backlog."""
        found: list[ConsumerState] = []
        try:
            while True:
                page = await self.js.consumers_info(stream, offset=len(found) or None)
                found += [consumer_state(info) for info in page]
                if len(page) < CONSUMER_LIST_PAGE:
                    return found
        except Exception as exc:
            raise translate(exc, f"listing the consumers of {stream}") from None

    async def consumer(self, spec: ConsumerSpec) -> ConsumerState:
        try:
            return consumer_state(await self.js.consumer_info(spec.stream, spec.durable))
        except Exception as exc:
            raise translate(exc, f"reading consumer {spec.durable}") from None

    @staticmethod
    async def _create_or_bind(what: str, create: Awaitable[H], bind: Callable[[], Awaitable[H]]) -> H:
        """Create a bucket; one that exists with another configuration is bound as it is (a bucket made by
        another client version differs in details; its data is what matters)."""
        try:
            try:
                return await create
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_EXISTS_DIFFERENTLY:
                    raise
                return await bind()
        except Exception as exc:
            raise translate(exc, f"provisioning {what}") from None

    async def kv(self, bucket: str) -> KeyValue:
        """The handle of a provisioned KV bucket (cached: binding one costs a round trip)."""
        return await self._bound(self._kv, bucket, self._bind_kv, "KV bucket")

    async def _bind_kv(self, bucket: str) -> KeyValue:
        return await patient_kv.bind(self.js, bucket, patience_s=self.request_timeout)

    async def object_store(self, bucket: str) -> ObjectStore:
        """The handle of a provisioned object store (cached)."""
        return await self._bound(self._objects, bucket, self.js.object_store, "object store")

    @staticmethod
    async def _bound(cache: dict[str, H], bucket: str, bind: Callable[[str], Awaitable[H]], what: str) -> H:
        handle = cache.get(bucket)
        if handle is None:
            try:
                handle = await bind(bucket)
            except nats.js.errors.BucketNotFoundError:
                raise Unavailable(f"{what} {bucket} does not exist: provision the bus first") from None
            except Exception as exc:
                raise translate(exc, f"binding {what} {bucket}") from None
            cache[bucket] = handle
        return handle

    # -- reading ----------------------------------------------------------------------------------------

    async def last_per_subject(
        self, stream: str, subjects_filter: str, *, headers_only: bool = False
    ) -> list[Msg]:
        """The newest message of every subject matching `subjects_filter` in `stream`, in one consumer pass
        (only their headers with `headers_only`).

        Not KeyValue.watch()/keys(): their "caught up" marker compares the consumer's pending count with
        messages the callback has *processed*, so a fast delivery ends them early and a listing silently
        misses entries. A pull consumer delivers nothing until asked, so its pending count right after
        creation is an exact snapshot.
        """
        js = self.js
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            headers_only=headers_only or None,
            mem_storage=True,
            inactive_threshold=SCAN_CONSUMER_TTL_S,
        )
        found: list[Msg] = []
        try:
            sub = await js.pull_subscribe(subjects_filter, stream=stream, config=config)
            info = await sub.consumer_info()
            try:
                remaining = info.num_pending or 0
                while remaining > 0:
                    batch = await sub.fetch(min(remaining, SCAN_BATCH), timeout=self.request_timeout)
                    for msg in batch:
                        remaining = msg.metadata.num_pending
                        found.append(msg)
            finally:
                await sub.unsubscribe()
                # Best effort: the inactivity threshold removes the consumer anyway.
                with contextlib.suppress(Exception):
                    await js.delete_consumer(stream, info.name)
        except Exception as exc:
            raise translate(exc, f"reading {stream} {subjects_filter}") from None
        return found

    async def follow(
        self, stream: str, subjects_filter: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        """The newest message of every subject matching `subjects_filter`, then every new one as it is stored,
        in stream order, to `cb` (a KV bucket's current entries, then its changes): an ordered consumer,
        which nats-py recreates from the last sequence seen after a gap, a reconnection or the loss of the
        server it lived on (missed heartbeats, `FOLLOW_HEARTBEAT_S`). A message's
        `metadata.num_pending` is 0 once the backlog is delivered. Unsubscribe to stop."""
        try:
            return await self.js.subscribe(
                subjects_filter,
                stream=stream,
                cb=cb,
                ordered_consumer=True,
                idle_heartbeat=FOLLOW_HEARTBEAT_S,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                inactive_threshold=SCAN_CONSUMER_TTL_S,
            )
        except Exception as exc:
            raise translate(exc, f"following {stream} {subjects_filter}") from None

    async def last_message(self, stream: str, subject: str) -> bytes:
        """The newest message on `subject` (NotFound when there is none)."""
        try:
            raw = await self.js.get_last_msg(stream, subject)
        except Exception as exc:
            raise translate(exc, f"reading {subject}") from None
        return raw.data or b""

    async def message(self, stream: str, seq: int) -> bytes:
        """The message at stream sequence `seq` (NotFound when it was removed)."""
        try:
            raw = await self.js.get_msg(stream, seq)
        except Exception as exc:
            raise translate(exc, f"reading {stream} #{seq}") from None
        return raw.data or b""

    async def count(self, stream: str, subjects_filter: str | None = None) -> tuple[int, dict[str, int]]:
        """Messages in `stream` (all, or matching a filter), and per subject when filtered."""
        try:
            info = await self.js.stream_info(stream, subjects_filter=subjects_filter)
        except Exception as exc:
            raise translate(exc, f"counting {stream} {subjects_filter or ''}") from None
        per_subject = dict(info.state.subjects or {})
        return (info.state.messages if subjects_filter is None else sum(per_subject.values())), per_subject

    async def purge(self, stream: str, subject: str, upto: int | None = None) -> None:
        """Remove the messages on `subject`, those up to stream sequence `upto` only when given."""
        try:
            # JetStream's purge keeps messages from `seq` on: one past the last counted purges all of them.
            await self.js.purge_stream(stream, subject=subject, seq=None if upto is None else upto + 1)
        except Exception as exc:
            raise translate(exc, f"purging {subject}") from None

    async def backlog(self, spec: ConsumerSpec) -> int:
        """Messages a durable consumer has not acknowledged yet (not yet delivered, or being processed)."""
        state = await self.consumer(spec)
        return state.waiting + state.taken

    # -- core NATS: inboxes for pull requests and replies --------------------------------------------------

    def new_inbox(self) -> str:
        return self.nc.new_inbox()

    async def subscribe(
        self, subject: str, cb: Callable[[Msg], Awaitable[None]], queue: str = ""
    ) -> Subscription:
        """Core NATS messages on `subject`; with a `queue` group, each message goes to one member only."""
        try:
            return await self.nc.subscribe(subject, queue=queue, cb=cb)
        except Exception as exc:
            raise translate(exc, f"subscribing to {subject}") from None

    async def send(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """A plain NATS message, not stored: a pull request, or a record for the API request waiting on it."""
        try:
            await self.nc.publish(subject, payload, reply=reply, headers=headers)
        except Exception as exc:
            raise translate(exc, f"sending to {subject}") from None

    async def request(self, subject: str, payload: bytes, timeout_s: float, unavailable: str) -> bytes | None:
        """A core NATS request to a service (e.g. the feeds role): its reply, None when none came in time, and
        Unavailable(`unavailable`) when no process serves `subject` at all."""
        try:
            reply = await self.nc.request(subject, payload, timeout=timeout_s)
        except nats.errors.NoRespondersError:
            raise Unavailable(unavailable) from None
        except nats.errors.TimeoutError:
            return None
        except Exception as exc:
            raise translate(exc, f"requesting {subject}") from None
        return reply.data

    async def pull(self, spec: ConsumerSpec, inbox: str, batch: int, expires_s: float) -> None:
        """Ask the durable consumer for up to `batch` messages, delivered to `inbox` as they come."""
        request = msgspec.json.encode({"batch": batch, "expires": int(expires_s * 1e9)})
        await self.send(f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}", request, reply=inbox)

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established: watchers may have missed messages meanwhile."""
        return int(self.nc.stats.get("reconnects", 0))

    # -- the message limit ---------------------------------------------------------------------------

    @property
    def message_limit(self) -> int:
        """The largest message the server takes (its `max_payload`)."""
        return int(self.nc.max_payload)

    def encode(self, record: R, shrink: Callable[[R, int], R] | None = None) -> bytes:
        """`record` as one message: as it is when it fits; else made to fit by its own rule (`shrink`, given
        the bytes it may use), e.g. log lines dropped from the end with OpenWhisk's notice; else PayloadTooLarge
        (413, with OpenWhisk's wording)."""
        payload = codec.encode(record)
        limit = self.message_limit
        if len(payload) > limit and shrink is not None:
            payload = codec.encode(shrink(record, limit - HEADROOM_BYTES))
        if len(payload) > limit:
            raise PayloadTooLarge(too_large_message(len(payload), limit))
        return payload

    # -- publishing --------------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> PubAck:
        """Publish to a stream and wait for its acknowledgement."""
        return await (await self.publish_async(subject, payload, msg_id, headers))

    async def publish_until_stored(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        *,
        within_s: float = STORE_PATIENCE_S,
    ) -> PubAck:
        """Publish, and again while JetStream cannot store it (a stream electing a leader after a node died, a
        reconnection), until it is stored or `within_s` has passed. The msg id makes a copy whose first
        acknowledgement was lost a duplicate that JetStream drops."""
        deadline = asyncio.get_running_loop().time() + within_s
        pause = 0.1
        while True:
            try:
                return await self.publish(subject, payload, msg_id, headers)
            except BackboneUnavailable:
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(2 * pause, 1.0)

    async def publish_many(self, messages: Iterable[Outgoing]) -> list[PubAck]:
        """Publish a batch without waiting between messages, then wait for every acknowledgement.

        If any message failed, the first failure is raised once all have settled; republishing the
        whole batch is then safe for messages that carry a msg id (JetStream drops the duplicates).
        """
        futures = [await self.publish_async(m.subject, m.payload, m.msg_id, m.headers) for m in messages]
        acks: list[PubAck] = []
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            acks.append(result)
        return acks

    async def publish_async(
        self,
        subject: str,
        payload: bytes,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> asyncio.Future[PubAck]:
        """Send now and return a future for the acknowledgement; waits only when too many are in flight."""
        hdrs = dict(headers) if headers else {}
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        nc = self.nc
        await self._in_flight.acquire()
        token = str(next(self._ack_ids))
        loop = asyncio.get_running_loop()
        unacked = _Unacked(
            ack=loop.create_future(),
            subject=subject,
            payload=payload,
            reply=f"{self._ack_prefix}.{token}",
            headers=hdrs or None,
            resend=msg_id is not None,
            deadline=loop.time() + self.request_timeout,
        )
        self._acks[token] = unacked
        self._arm(token, unacked)

        def settled(_: asyncio.Future[PubAck]) -> None:
            if unacked.timer is not None:
                unacked.timer.cancel()
            self._in_flight.release()

        unacked.ack.add_done_callback(settled)
        try:
            await nc.publish(subject, payload, reply=unacked.reply, headers=unacked.headers)
        except Exception as exc:
            self._acks.pop(token, None)
            unacked.ack.set_exception(translate(exc, f"publishing to {subject}"))
        return unacked.ack

    def _arm(self, token: str, unacked: _Unacked) -> None:
        """The publish's next look: a re-send after RESEND_AFTER_S if it may be sent again, else its expiry."""
        loop = asyncio.get_running_loop()
        wait = unacked.deadline - loop.time()
        if unacked.resend:
            wait = min(wait, RESEND_AFTER_S)
        unacked.timer = loop.call_later(max(wait, 0.0), self._unanswered, token)

    def _unanswered(self, token: str) -> None:
        unacked = self._acks.get(token)
        if unacked is None or unacked.ack.done():
            return
        if asyncio.get_running_loop().time() >= unacked.deadline:
            del self._acks[token]
            unacked.ack.set_exception(
                BackboneUnavailable(f"publishing to {unacked.subject}: no acknowledgement from JetStream")
            )
            return
        task = asyncio.ensure_future(self._send_again(unacked))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)
        self._arm(token, unacked)

    async def _send_again(self, unacked: _Unacked) -> None:
        nc = self._nc
        if nc is None:
            return
        try:
            await nc.publish(unacked.subject, unacked.payload, reply=unacked.reply, headers=unacked.headers)
        except Exception as exc:  # the next look sends again, or the deadline answers the caller
            log.debug("sending %s again failed: %s", unacked.subject, describe(exc))

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._ack_prefix) + 1 :]
        unacked = self._acks.get(token)
        if unacked is None or unacked.ack.done():
            return
        fut, subject = unacked.ack, unacked.subject
        result: PubAck | SquallError | None
        if msg.headers and msg.headers.get("Status") == "503":
            # No responders: no stream stores the subject, or (in a cluster) its stream is electing a leader.
            result = BackboneUnavailable(
                f"publishing to {subject}: no JetStream stream answered (none stores this subject, or it is "
                "electing a leader)"
            )
        else:
            result = ack_result(msg.data, subject)
            if result is None:  # a copy sent again meets its first one still being stored: that one answers
                return
        del self._acks[token]
        if isinstance(result, PubAck):
            fut.set_result(result)
        else:
            fut.set_exception(result)


class _Unacked(msgspec.Struct, kw_only=True):
    """A publish waiting for its acknowledgement: what it takes to send it again, and its deadline."""

    ack: asyncio.Future[PubAck]
    subject: str
    payload: bytes
    reply: str
    headers: dict[str, str] | None
    resend: bool  # it has a msg id: a copy of it stored twice is stored once
    deadline: float  # the loop's time at which it is answered BackboneUnavailable
    timer: asyncio.TimerHandle | None = None
