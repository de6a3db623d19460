"""KV reads that ride out a cluster's election: short attempts, repeated, instead of one long wait.

JetStream answers a read of a bucket only from its stream's leader (broker/bus.py turns direct reads off at R3),
and a request that reaches the cluster while that leader is gone is dropped, not refused: the reader hears
nothing until its timeout. After a node's SIGKILL a read sent in the election's first second would so wait the
whole request timeout (5 s) although the bucket had a new leader after two or three. Reading is safe to repeat,
so a read is sent again each READ_ATTEMPT_S within the same overall timeout, and the first answer wins.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.client import KV_PRE_TEMPLATE, KV_STREAM_TEMPLATE
from nats.js.kv import KeyValue

READ_ATTEMPT_S = 1.0


class PatientKeyValue(KeyValue):
    """nats-py's KeyValue whose `get` is attempted every READ_ATTEMPT_S until `patience_s` has passed."""

    def __init__(
        self, *, name: str, stream: str, pre: str, js: JetStreamContext, direct: bool, patience_s: float
    ) -> None:
        super().__init__(name=name, stream=stream, pre=pre, js=js, direct=direct)
        self.patience_s = patience_s

    async def get(self, key: str, revision: int | None = None, validate_keys: bool = True) -> KeyValue.Entry:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience_s
        while (remaining := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(
                    super().get(key, revision, validate_keys), min(READ_ATTEMPT_S, remaining)
                )
        raise nats.errors.TimeoutError


def handle(js: JetStreamContext, bucket: str, *, direct: bool, patience_s: float) -> PatientKeyValue:
    """The handle of bucket `bucket`, read from any replica when `direct`, else from its stream's leader."""
    return PatientKeyValue(
        name=bucket,
        stream=KV_STREAM_TEMPLATE.format(bucket=bucket),
        pre=KV_PRE_TEMPLATE.format(bucket=bucket),
        js=js,
        direct=direct,
        patience_s=patience_s,
    )


async def bind(js: JetStreamContext, bucket: str, patience_s: float) -> PatientKeyValue:
    """The handle of an existing bucket (BucketNotFoundError if there is none), read as its stream allows."""
    try:
        info = await js.stream_info(KV_STREAM_TEMPLATE.format(bucket=bucket))
    except nats.js.errors.NotFoundError:
        raise nats.js.errors.BucketNotFoundError from None
    return handle(js, bucket, direct=bool(info.config.allow_direct), patience_s=patience_s)
