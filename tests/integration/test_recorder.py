"""The activation recorder: records published on ACTIVATIONS end up in MongoDB, once each, in batches."""

from __future__ import annotations

import asyncio
import time
import uuid

from broker.activation_store import ActivationStore
from broker.activations import SUCCESS, Activation, make_response, new_activation_id
from broker.bus import JetStreamBus, Outgoing
from broker.codec import encode
from broker.recorder import ActivationRecorder
from broker.subjects import activation_subject


def record(namespace: str) -> Activation:
    now = int(time.time() * 1000)
    return Activation(
        namespace=namespace,
        name="a",
        subject=namespace,
        activationId=new_activation_id(),
        start=now,
        end=now,
        duration=0,
        response=make_response(SUCCESS, {"n": 1}),
        logs=[],
        version="0.0.1",
        publish=False,
        annotations=[],
    )


async def wait_count(store: ActivationStore, namespace: str, expected: int, deadline_s: float = 15) -> int:
    end = time.monotonic() + deadline_s
    while True:
        count = await store.count(namespace)
        if count >= expected or time.monotonic() > end:
            return count
        await asyncio.sleep(0.05)


async def test_a_burst_trickle_and_duplicates_are_all_stored_once(
    bus: JetStreamBus, activation_store: ActivationStore
) -> None:
    ns = f"rec-{uuid.uuid4().hex[:8]}"
    burst = [record(ns) for _ in range(300)]
    async with ActivationRecorder(bus, activation_store) as recorder:
        await bus.publish_many(
            Outgoing(subject=activation_subject(ns, "a"), payload=encode(r), msg_id=r.activationId)
            for r in burst
        )
        # A trickle, one at a time, exercises the short-batch path.
        trickle = [record(ns) for _ in range(5)]
        for r in trickle:
            await bus.publish(activation_subject(ns, "a"), encode(r), msg_id=r.activationId)
        # Redelivered or republished records are no-ops (outside the stream's duplicate window too).
        await bus.publish(activation_subject(ns, "a"), encode(burst[0]))
        assert await wait_count(activation_store, ns, 305) == 305
        assert recorder.recorded >= 305
    assert await activation_store.count(ns) == 305
