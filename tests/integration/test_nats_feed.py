"""The NATS-subject feed on real servers: messages a service publishes on `events.<ns>.…` fire the trigger once
each (also when redelivered), a subject outside the namespace's prefix is refused at CREATE, DELETE stops it."""

from __future__ import annotations

import json
import time

import httpx
import nats.js.errors

from broker import subjects
from broker.activation_store import ActivationStore
from broker.bus import JetStreamBus
from broker.errors import Unavailable
from broker.feed_registry import FeedRegistry
from broker.firing import Fire, TriggerFiring
from feeds.nats_feed import durable_of
from feeds.service import FeedsRole
from tests.conditions import eventually
from tests.integration.feeds_support import feeds_platform, lifecycle, setup_trigger, trigger_records

__all__ = ["feeds_platform"]  # the fixture, used by name

FEED = "messaging/natsFeed"


async def _durable(bus: JetStreamBus, namespace: str) -> str:
    registration, _ = await FeedRegistry(bus).get(namespace, "t")
    return durable_of(registration)


async def _consumer_exists(bus: JetStreamBus, durable: str) -> bool:
    try:
        await bus.js.consumer_info(subjects.EVENTS_STREAM, durable)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def test_each_published_message_on_the_feeds_subject_fires_once(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
    bus: JetStreamBus,
) -> None:
    ns, key = namespace
    await setup_trigger(ns_client)
    prefix = subjects.events_prefix(ns)
    answer = await lifecycle(ns_client, FEED, "CREATE", key, subject=f"{prefix}orders.>")
    assert answer == {"subject": f"{prefix}orders.>"}
    # Published right after the CREATE: the feed's consumer starts at the CREATE, wherever it is made.
    await bus.publish(f"{prefix}orders.created", json.dumps({"order": 1}).encode())
    await bus.publish(f"{prefix}orders.paid", b"plain text", headers={"X-Trace": "tr-1"})
    await bus.publish(f"{prefix}orders.paid", b'{"order": 3}', msg_id="order-3")
    await bus.publish(f"{prefix}elsewhere", b'{"order": 4}')  # not the feed's subject

    async def fired(count: int) -> bool:
        return len(await trigger_records(activation_store, ns, "t")) >= count

    await eventually(lambda: fired(3), what="three fires")
    records = await trigger_records(activation_store, ns, "t")
    assert sorted(json.dumps(r.response.result, sort_keys=True) for r in records) == sorted(
        [json.dumps({"order": 1}), json.dumps({"payload": "plain text"}), json.dumps({"order": 3})]
    )
    run = await activation_store.get(ns, json.loads(records[0].logs[0])["activationId"])
    assert run.response.result["__ow_headers"]["nats-subject"].startswith(f"{prefix}orders.")

    # The feed's health counts its fires.
    async def counted() -> bool:
        status = await FeedRegistry(bus).status(ns, "t")
        return status.fireCount >= 3 and status.lastFire is not None

    await eventually(counted, what="the fire count in the feed's status")


class LosesTheFirstAck:
    """The fire path as a feeds process that crashes after each message's first fire is accepted and before it
    acknowledges it: the fire is stored, then the handler fails, so JetStream delivers the message again."""

    def __init__(self, firing: TriggerFiring) -> None:
        self.firing = firing
        self.calls: dict[str | None, int] = {}

    async def fire(self, request: Fire) -> str | None:
        activation_id = await self.firing.fire(request)
        self.calls[request.idempotency_key] = self.calls.get(request.idempotency_key, 0) + 1
        if self.calls[request.idempotency_key] == 1:
            raise Unavailable("lost before the ack")
        return activation_id


async def test_a_redelivered_message_fires_once(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
    bus: JetStreamBus,
) -> None:
    ns, key = namespace
    await setup_trigger(ns_client)
    crashing = LosesTheFirstAck(feeds_platform.nats_feeds.firing)
    feeds_platform.nats_feeds.firing = crashing  # type: ignore[assignment]
    prefix = subjects.events_prefix(ns)
    await lifecycle(ns_client, FEED, "CREATE", key, subject=f"{prefix}a")
    await bus.publish(f"{prefix}a", b'{"n": 1}')
    await bus.publish(f"{prefix}a", b'{"n": 2}', msg_id="two")

    async def handled_twice() -> bool:
        return sorted(crashing.calls.values()) == [2, 2]

    await eventually(handled_twice, what="each message to be delivered and fired twice")
    durable = await _durable(bus, ns)

    async def acked() -> bool:
        info = await bus.js.consumer_info(subjects.EVENTS_STREAM, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(acked, what="both messages acknowledged")
    records = await trigger_records(activation_store, ns, "t")
    assert sorted(r.response.result["n"] for r in records) == [1, 2], "one record per message"
    assert "nats-msg:two" in crashing.calls


async def test_a_subject_outside_the_namespace_prefix_is_refused_at_create(
    ns_client: httpx.AsyncClient, namespace: tuple[str, str], feeds_platform: FeedsRole, bus: JetStreamBus
) -> None:
    ns, key = namespace
    await setup_trigger(ns_client)
    prefix = subjects.events_prefix(ns)
    for subject in ("events.other-ns.orders", "trigger.x.y", "events.>", f"{prefix}a..b", None):
        params = {} if subject is None else {"subject": subject}
        answer = await lifecycle(ns_client, FEED, "CREATE", key, **params)
        assert answer["statusCode"] == 400, answer
        assert prefix in answer["error"]
    assert await FeedRegistry(bus).list(ns) == []


async def test_delete_removes_the_consumer_and_stops_the_fires(
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feeds_platform: FeedsRole,
    activation_store: ActivationStore,
    bus: JetStreamBus,
) -> None:
    ns, key = namespace
    await setup_trigger(ns_client)
    prefix = subjects.events_prefix(ns)
    await lifecycle(ns_client, FEED, "CREATE", key, subject=f"{prefix}x")
    durable = await _durable(bus, ns)
    await bus.publish(f"{prefix}x", b'{"n": 1}')

    async def fired() -> bool:
        return len(await trigger_records(activation_store, ns, "t")) == 1

    await eventually(fired, what="the first fire")
    assert await lifecycle(ns_client, FEED, "DELETE", key) == {}

    async def gone() -> bool:
        return not await _consumer_exists(bus, durable)

    await eventually(gone, what="the feed's consumer to be removed")
    ack = await bus.publish(f"{prefix}x", b'{"n": 2}')
    # Stored, and read by nobody: no consumer of EVENTS filters on the subject any more.
    assert ack.stream == subjects.EVENTS_STREAM
    infos = await bus.js.consumers_info(subjects.EVENTS_STREAM)
    assert all(info.config.filter_subject != f"{prefix}x" for info in infos)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # nothing may show up; checked for a while, not assumed
        assert len(await trigger_records(activation_store, ns, "t")) == 1
