"""Reading fire requests as events: plain OpenWhisk payloads and CloudEvents in both HTTP content modes."""

from __future__ import annotations

import base64
import json

import pytest

from api.cloudevents import Incoming, read_event
from broker.errors import BadRequest

EVENT = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


def structured(document: object) -> Incoming:
    return read_event(
        {"content-type": "application/cloudevents+json; charset=utf-8"}, json.dumps(document).encode()
    )


def test_a_plain_fire_is_its_payload_without_attributes() -> None:
    assert read_event({}, b'{"a": 1}') == Incoming(payload={"a": 1})
    assert read_event({"content-type": "application/json"}, b"  ") == Incoming(payload={})
    assert read_event({}, b"").idempotency_key is None


def test_structured_mode_splits_attributes_from_data() -> None:
    incoming = structured({**EVENT, "subject": "x", "data": {"k": "v"}})
    assert incoming.payload == {"k": "v"}
    assert incoming.attributes == {**EVENT, "subject": "x"}
    assert incoming.idempotency_key == "/s\x1f1", "source and id identify an event"


@pytest.mark.parametrize(
    ("data", "payload"),
    [(None, {}), ([1, 2], {"data": [1, 2]}), ("text", {"data": "text"}), (5, {"data": 5})],
)
def test_data_that_is_not_an_object_arrives_as_data(data: object, payload: dict[str, object]) -> None:
    document = {**EVENT} if data is None else {**EVENT, "data": data}
    assert structured(document).payload == payload


def test_structured_base64_data_is_kept_encoded() -> None:
    encoded = base64.b64encode(b"\x00\x01").decode()
    assert structured({**EVENT, "data_base64": encoded}).payload == {"data_base64": encoded}


def test_binary_mode_reads_ce_headers_and_decodes_the_body_by_its_type() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "9",
        "ce-source": "/orders%2Feu",
        "ce-type": "order.created",
        "ce-squallhops": "2",
        "content-type": "application/json",
    }
    incoming = read_event(headers, b'{"order": 7}')
    assert incoming.payload == {"order": 7}
    assert incoming.attributes == {
        "specversion": "1.0",
        "id": "9",
        "source": "/orders/eu",  # percent-decoded, as the HTTP binding says
        "type": "order.created",
        "squallhops": "2",
        "datacontenttype": "application/json",
    }
    text = read_event({**headers, "content-type": "text/plain"}, "héllo".encode())
    assert text.payload == {"data": "héllo"}
    raw = read_event({**headers, "content-type": "application/octet-stream"}, b"\xff\x00")
    assert raw.payload == {"data_base64": base64.b64encode(b"\xff\x00").decode()}


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"content-type": "application/cloudevents+json"}, b"[1]", "must be a JSON object"),
        ({"content-type": "application/cloudevents+json"}, b"{", "not valid JSON"),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({"id": "1"}).encode(),
            "source, specversion, type",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({**EVENT, "specversion": "0.3"}).encode(),
            "'0.3' is not supported",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({**EVENT, "data": 1, "data_base64": "AA=="}).encode(),
            "either data or data_base64",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({**EVENT, "data_base64": "!!"}).encode(),
            "not valid base64",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({**EVENT, "Bad_Name": "x"}).encode(),
            "attribute name",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({**EVENT, "nested": {"a": 1}}).encode(),
            "must be a string",
        ),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "Batched"),
        ({"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t"}, b"{}", "source"),
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-type": "t",
                "ce-source": "s",
                "content-type": "text/plain",
            },
            b"\xff",
            "UTF-8",
        ),
        ({}, b"[]", "Object expected"),
    ],
)
def test_malformed_events_are_400_saying_why(headers: dict[str, str], body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        read_event(headers, body)
    assert message in caught.value.message
    assert caught.value.message.startswith("The request content was malformed:")
