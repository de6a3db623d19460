"""Activation records larger than one NATS message: the whole record in an object store, a stub on the stream.

The action's limits (10 MB of logs, 1 MB of result) decide what a record keeps, not NATS's `max_payload` (1 MB by
default). A record that does not fit one message is written whole to the LARGE_RECORDS object store under its
activation id, and ACTIVATIONS (and a waiting blocking invoke) get a stub: the record without its logs, and
without its result too if that alone is too large, with the `Squall-Record-Object` header naming the object.
Readers that need the whole record (the recorder, the API's blocking wait when the stub lacks the result) read
it back with `load`; the recorder deletes the object once MongoDB has the record. Objects age out with the
ACTIVATIONS stream and the store has a byte bound, so an object whose record is never recorded costs nothing
for long; a stub whose object is gone is recorded as it is, with OpenWhisk's log-failure notice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec
import nats.js.errors

from broker import codec, subjects
from broker.activations import Activation
from broker.bus import HEADROOM_BYTES, JetStreamBus
from broker.errors import SquallError
from broker.nats_errors import translate

log = logging.getLogger("squall.large_records")

OBJECT_HEADER: Final = "Squall-Record-Object"
# OpenWhisk's Messages.logFailure: the words it uses when it could not collect every log line.
LOG_FAILURE: Final = "There was an issue while collecting your logs. Data might be missing."


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A record as it travels: the payload, and the header naming its object when the payload is a stub."""

    payload: bytes
    headers: dict[str, str] | None = None


def stub(record: Activation) -> Activation:
    """The record without its logs: what the stream carries in place of a record too large for a message."""
    return msgspec.structs.replace(record, logs=[])


def without_result(record: Activation, _limit: int) -> Activation:
    """A stub whose result alone is too large (a result near the 1 MB limit): `load` gives the whole record."""
    return msgspec.structs.replace(record, response=msgspec.structs.replace(record.response, result=None))


def fits(payload: bytes, bus: JetStreamBus) -> bool:
    return len(payload) <= bus.message_limit - HEADROOM_BYTES  # room for the msg id and a reply subject


async def prepare(bus: JetStreamBus, record: Activation) -> Message:
    """`record` as one message: itself when it fits, else a stub pointing at the whole record in the store."""
    payload = codec.encode(record)
    if fits(payload, bus):
        return Message(payload=payload)
    name = record.activationId
    try:
        store = await bus.object_store(subjects.LARGE_RECORDS_BUCKET)
        await store.put(name, payload)
    except Exception as exc:
        # The store is full or unreachable: the record still goes out, its logs replaced by OpenWhisk's notice.
        log.warning(
            "could not store the %d-byte record %s: %s", len(payload), name, translate(exc, "storing")
        )
        lost = msgspec.structs.replace(record, logs=[failure_line(record)])
        return Message(payload=bus.encode(lost, shrink=without_result))
    del payload  # the largest copy: the stub is all that stays in memory
    return Message(payload=bus.encode(stub(record), shrink=without_result), headers={OBJECT_HEADER: name})


async def load(bus: JetStreamBus, payload: bytes, name: str | None) -> Activation:
    """The whole record of a message: the payload itself, or the object its header names. A stub whose object
    is gone (aged out, or already recorded and deleted) is the record as far as it is known."""
    record = codec.decode(payload, Activation)
    if name is None:
        return record
    try:
        store = await bus.object_store(subjects.LARGE_RECORDS_BUCKET)
        found = await store.get(name)
    except nats.js.errors.ObjectNotFoundError:
        return msgspec.structs.replace(record, logs=[*record.logs, failure_line(record)])
    except Exception as exc:
        raise translate(exc, f"reading the record {name}") from None
    return codec.decode(found.data or b"", Activation)


async def with_result(bus: JetStreamBus, payload: bytes, headers: Mapping[str, str] | None) -> bytes:
    """A message's record for an answer that shows no logs (a blocking invoke's): a stub that kept its result
    is enough; one whose result did not fit is read back whole (or stays a stub if the store is unreachable)."""
    name = headers.get(OBJECT_HEADER) if headers else None
    if name is None or codec.decode(payload, Activation).response.result is not None:
        return payload
    try:
        return codec.encode(await load(bus, payload, name))
    except SquallError as exc:
        log.warning("could not read the record %s: %s", name, exc.message)
        return payload


async def forget(bus: JetStreamBus, name: str) -> None:
    """Delete an object once its record is stored; one left behind ages out with the stream."""
    try:
        store = await bus.object_store(subjects.LARGE_RECORDS_BUCKET)
        await store.delete(name)
    except nats.js.errors.ObjectNotFoundError:
        pass
    except Exception as exc:
        log.warning("could not delete the stored record %s: %s", name, exc)


def failure_line(record: Activation) -> str:
    at = datetime.fromtimestamp((record.end or record.start) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{at}Z".ljust(30) + f" stderr: {LOG_FAILURE}"
