"""JetStream's own records as the bus reads and writes them: stream and consumer configurations made from the
topology (broker/topology.py), consumer states, and publish acknowledgements."""

from __future__ import annotations

import datetime

import msgspec
import nats.js.errors
from nats.js import api

from broker.errors import InternalError, SquallError
from broker.nats_errors import translate
from broker.topology import ConsumerSpec, StreamSpec

# JetStream's answer to a copy of a message whose first copy (same msg id) it is still storing.
DUPLICATE_IN_PROCESS = 10158


class PubAck(msgspec.Struct, frozen=True, kw_only=True):
    """JetStream's acknowledgement of a stored message; `duplicate` means the msg id was seen already."""

    stream: str
    seq: int
    duplicate: bool = False


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    """One message for `publish_many`."""

    subject: str
    payload: bytes
    msg_id: str | None = None
    headers: dict[str, str] | None = None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _AckReply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_AckReply)


class ConsumerState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    max_ack_pending: int
    waiting: int  # not delivered yet
    taken: int  # delivered and not acknowledged: being handled, or waiting for a redelivery


def consumer_state(info: api.ConsumerInfo) -> ConsumerState:
    return ConsumerState(
        name=info.name,
        max_ack_pending=info.config.max_ack_pending or -1,
        waiting=info.num_pending or 0,
        taken=info.num_ack_pending or 0,
    )


def stream_config(spec: StreamSpec) -> api.StreamConfig:
    retention = (
        api.RetentionPolicy.WORK_QUEUE if spec.retention == "work-queue" else api.RetentionPolicy.LIMITS
    )
    return api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=retention,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        discard=api.DiscardPolicy.NEW if spec.discard == "new" else api.DiscardPolicy.OLD,
        storage=api.StorageType.FILE,
        num_replicas=spec.replicas,
        duplicate_window=spec.duplicate_window_s,
    )


def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    policy = api.DeliverPolicy.NEW if spec.deliver == "new" else api.DeliverPolicy.ALL
    since = None
    if spec.deliver_since_ms is not None:
        policy = api.DeliverPolicy.BY_START_TIME
        since = datetime.datetime.fromtimestamp(spec.deliver_since_ms / 1000, datetime.UTC)
    return api.ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=policy,
        opt_start_time=since,
        ack_wait=spec.ack_wait_s,
        max_ack_pending=spec.max_ack_pending,
        max_waiting=spec.max_waiting,
    )


def ack_result(data: bytes, subject: str) -> PubAck | SquallError | None:
    """A JetStream publish reply as a PubAck or the broker error it stands for; None for no answer yet: a copy
    with the same msg id is still being stored (a message sent again while its first copy was on its way), and
    that copy's acknowledgement will tell."""
    try:
        reply = _ack_decoder.decode(data)
    except msgspec.DecodeError:
        return InternalError(f"unreadable JetStream acknowledgement: {data[:200]!r}")
    if reply.error is not None and reply.error.err_code == DUPLICATE_IN_PROCESS:
        return None
    if reply.error is not None:
        err = nats.js.errors.APIError(
            code=reply.error.code, err_code=reply.error.err_code, description=reply.error.description
        )
        return translate(err, f"publishing to {subject}")
    return PubAck(stream=reply.stream, seq=reply.seq, duplicate=reply.duplicate)
