"""The backbone on a real 3-node NATS cluster (R3): several URLs, and the consumers that must outlive the server
they were talking to (a reconnection elsewhere) or the one leading their stream (a leader change)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from broker import subjects
from broker.activation_tail import ActivationTail, TailLost
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.errors import BackboneUnavailable
from broker.stream_worker import Delivery, StreamWorker
from broker.topology import BucketSpec, ConsumerSpec, StreamSpec
from squall.embedded import free_port
from squall.nats_cluster import NatsCluster, NatsNode
from tests.conditions import eventually

pytestmark = pytest.mark.slow

# A consumer or a watch must be back within this long of its server's death (heartbeats, pull expiry, election).
RECOVERY_S = 30.0


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsCluster]:
    async with NatsCluster(tmp_path_factory.mktemp("nats-cluster")) as cluster:
        yield cluster


@pytest.fixture
async def bus(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[JetStreamBus]:
    """A bus on the cluster at R3; every node is running again after the test."""
    async with JetStreamBus(Settings(nats_url=cluster.url, replicas=3, data_dir=tmp_path)) as bus:
        yield bus
    for node in cluster.nodes:
        if not node.running:
            await node.restart()
    await cluster.wait_quorum()


def node_named(cluster: NatsCluster, name: str | None) -> NatsNode:
    return next(node for node in cluster.nodes if node.name == name)


def connected_node(cluster: NatsCluster, bus: JetStreamBus) -> NatsNode:
    url = bus.nc.connected_url
    assert url is not None
    return next(node for node in cluster.nodes if node.port == url.port)


async def _true(value: bool) -> bool:
    return value


async def test_several_urls_connect_past_a_dead_one_and_provision_r3(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    settings = Settings(nats_url=f"{dead}, {cluster.url}", replicas=3, data_dir=tmp_path)
    assert settings.nats_servers[0] == dead and len(settings.nats_servers) == 4
    async with JetStreamBus(settings) as bus:
        await bus.provision()
        for stream in (subjects.TRIGGERS_STREAM, subjects.INVOKE_STREAM, subjects.ACTIVATIONS_STREAM):
            info = await bus.js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        for kv in (subjects.ENTITIES_BUCKET, subjects.FEEDS_MEMBERS_BUCKET):
            assert (await bus.js.stream_info(f"KV_{kv}")).config.num_replicas == 3
        for objects in (subjects.BLOBS_BUCKET, subjects.LARGE_RECORDS_BUCKET):
            assert (await bus.js.stream_info(f"OBJ_{objects}")).config.num_replicas == 3


async def test_a_kv_read_after_an_acknowledged_write_sees_it_from_any_server(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """A read on one server right after a write acknowledged on another answers the write, never the value
    before it: a replica that has not applied the write yet must not answer (direct reads stay off at R3),
    or a cache keeps the stale value (found as a rule made inactive that went on running)."""
    bucket = f"rw_{uuid.uuid4().hex[:8]}"
    stale = 0
    buses = []
    try:
        for node in cluster.nodes:
            settings = Settings(nats_url=node.url, replicas=3, data_dir=tmp_path / node.name)
            buses.append(await JetStreamBus(settings).__aenter__())
        # As made by an earlier version, with direct reads: provisioning turns them off.
        await buses[0].js.create_key_value(bucket=bucket, replicas=3, direct=True)
        await buses[0].provision_bucket(BucketSpec(name=bucket, replicas=3))
        assert (await buses[0].js.stream_info(f"KV_{bucket}")).config.allow_direct is False
        handles = [await bus.kv(bucket) for bus in buses]
        for writer in handles:  # stale answers came from 1-4 of 1,000 reads under load with direct reads on
            readers = [handle for handle in handles if handle is not writer]
            for n in range(200):
                value = f"{n}".encode()
                await writer.put("k", value)
                answers = await asyncio.gather(*(reader.get("k") for reader in readers))
                stale += sum(answer.value != value for answer in answers)
    finally:
        if buses:
            await buses[0].js.delete_key_value(bucket)
        for bus in buses:
            await bus.__aexit__(None, None, None)
    assert stale == 0, f"{stale} of 1,200 reads answered the value before an acknowledged write"


async def test_a_follow_goes_on_after_the_server_of_its_consumer_dies(
    cluster: NatsCluster, bus: JetStreamBus
) -> None:
    bucket = f"t_{uuid.uuid4().hex[:8]}"
    kv = await bus.provision_bucket(BucketSpec(name=bucket, replicas=3))
    seen: set[str] = set()

    async def on_entry(msg: object) -> None:
        seen.add(getattr(msg, "subject", "").rsplit(".", 1)[-1])

    sub = await bus.follow(f"KV_{bucket}", f"$KV.{bucket}.>", on_entry)
    try:
        await kv.put("before", b"1")
        await eventually(lambda: _true("before" in seen), what="the first entry")
        info = await sub.consumer_info()
        assert info.cluster is not None
        await node_named(cluster, info.cluster.leader).kill()
        deadline = asyncio.get_running_loop().time() + RECOVERY_S
        while True:
            try:
                await kv.put("after", b"2")
                break
            except Exception:
                assert asyncio.get_running_loop().time() < deadline, "KV writes never came back"
                await asyncio.sleep(0.2)
        await eventually(lambda: _true("after" in seen), RECOVERY_S, "the entry written after the kill")
    finally:
        await sub.unsubscribe()


class Item(msgspec.Struct, frozen=True):
    n: int


async def test_a_stream_worker_goes_on_after_a_reconnection_and_a_leader_change(
    cluster: NatsCluster, bus: JetStreamBus
) -> None:
    tag = uuid.uuid4().hex[:8]
    await bus.provision_stream(StreamSpec(name=f"W_{tag}", subjects=(f"w.{tag}",), max_age_s=600, replicas=3))
    spec = ConsumerSpec(stream=f"W_{tag}", durable="w", ack_wait_s=2.0)
    handled: list[int] = []

    async def handle(delivery: Delivery[Item]) -> None:
        handled.append(delivery.value.n)

    async def publish(numbers: range) -> None:
        for n in numbers:
            await bus.publish_until_stored(
                f"w.{tag}", msgspec.json.encode(Item(n)), f"{tag}-{n}", within_s=RECOVERY_S
            )

    async with StreamWorker(bus, spec, msgspec.json.Decoder(Item).decode, handle=handle, max_in_flight=16):
        await publish(range(100))
        await eventually(lambda: _true(len(set(handled)) == 100), what="100 before any kill")

        # The server this process talks to dies: the client reconnects to another one.
        killed = connected_node(cluster, bus)
        await killed.kill()
        await publish(range(100, 200))
        await eventually(lambda: _true(len(set(handled)) == 200), RECOVERY_S, "100 after a reconnection")
        await killed.restart()
        await cluster.wait_quorum()

        # The consumer's leader dies (a leader change, the client may well stay connected).
        info = await bus.js.consumer_info(spec.stream, spec.durable)
        assert info.cluster is not None
        await node_named(cluster, info.cluster.leader).kill()
        await publish(range(200, 300))
        await eventually(lambda: _true(len(set(handled)) == 300), RECOVERY_S, "100 after a leader change")
    assert set(handled) == set(range(300))


async def test_an_activation_tail_whose_consumer_died_with_its_server_says_so(
    cluster: NatsCluster, bus: JetStreamBus
) -> None:
    spec = StreamSpec(
        name=subjects.ACTIVATIONS_STREAM, subjects=(subjects.ACTIVATIONS_SUBJECTS,), max_age_s=600, replicas=3
    )

    async def provisioned() -> bool:
        # The stream exists with other bounds: the update goes to its leader, which the previous test's
        # kill and restart may have left electing (a request to a stream without a leader goes unanswered).
        with contextlib.suppress(BackboneUnavailable):
            await bus.provision_stream(spec)
            return True
        return False

    await eventually(provisioned, RECOVERY_S, "ACTIVATIONS provisioned")
    async with ActivationTail(bus, subjects.activation_filter(f"ns{uuid.uuid4().hex[:6]}")) as tail:
        assert tail.consumer_name is not None
        info = await bus.js.consumer_info(subjects.ACTIVATIONS_STREAM, tail.consumer_name)
        assert info.cluster is not None
        await node_named(cluster, info.cluster.leader).kill()
        # Not a wait forever on a consumer that is gone: the reader learns of it, and its owner reopens one.
        with pytest.raises(TailLost):
            await asyncio.wait_for(tail.next(), RECOVERY_S)
