"""The NATS-subject feed's pure rules: which subjects a namespace may read, and messages as fires."""

from __future__ import annotations

import pytest

from broker.errors import BadRequest
from broker.feed_registry import FeedRegistration
from feeds.nats_feed import (
    NatsFeedProvider,
    check_subject,
    durable_of,
    message_headers,
    message_key,
    message_payload,
    throttle_delay,
)


@pytest.mark.parametrize(
    "subject",
    ["events.ns.orders", "events.ns.orders.>", "events.ns.*.created", "events.ns.>", "events.ns.a.b.c"],
)
def test_subjects_under_the_namespace_prefix_are_allowed(subject: str) -> None:
    assert check_subject("ns", subject) == subject


def test_the_prefix_uses_the_escaped_namespace() -> None:
    assert check_subject("my ns@x", "events.my=20ns=40x.a") == "events.my=20ns=40x.a"
    with pytest.raises(BadRequest, match=r"'events\.my=20ns=40x\.'"):
        check_subject("my ns@x", "events.my ns@x.a")


@pytest.mark.parametrize(
    "subject",
    [
        "events.other.orders",  # another namespace's
        "events.nsx.orders",  # a namespace whose name starts like this one
        "trigger.ns.t",  # an internal subject
        "$KV.squall_feeds.>",
        "events.>",
        "events.*.orders",
        "events.ns",  # the prefix alone
        "events.ns.",
        ">",
    ],
)
def test_subjects_outside_the_prefix_are_refused_naming_it(subject: str) -> None:
    with pytest.raises(BadRequest, match=r"events\.ns\."):
        check_subject("ns", subject)


@pytest.mark.parametrize(
    "subject",
    ["events.ns..a", "events.ns.a b", "events.ns.>.a", "events.ns.a*", "events.ns.a>", "events.ns.a."],
)
def test_malformed_subjects_are_refused(subject: str) -> None:
    with pytest.raises(BadRequest, match="malformed"):
        check_subject("ns", subject)


def test_missing_or_non_string_subjects_are_refused() -> None:
    for subject in (None, "", 7):
        with pytest.raises(BadRequest, match="required"):
            check_subject("ns", subject)


def test_the_provider_checks_scope_at_create_and_keeps_the_subject_on_update() -> None:
    provider = NatsFeedProvider()
    config = provider.configure({"subject": "events.ns.a"}, None, 0)
    provider.check_scope("ns", config)
    with pytest.raises(BadRequest):
        provider.check_scope("other", config)
    assert provider.configure({}, config, 1) == config
    with pytest.raises(BadRequest, match=r"required: a NATS subject under 'events\.ns\.'"):
        provider.check_scope("ns", provider.configure({}, None, 0))


def test_payloads() -> None:
    assert message_payload(b'{"a": 1}') == {"a": 1}
    assert message_payload(b"[1, 2]") == {"payload": "[1, 2]"}
    assert message_payload(b"{not json") == {"payload": "{not json"}
    assert message_payload(b"hello") == {"payload": "hello"}
    assert message_payload(b"\xff\x00") == {"payload_base64": "/wA="}
    assert message_payload(b"") == {"payload": ""}


def test_keys_headers_and_delays() -> None:
    assert message_key("m-1", 9) == "nats-msg:m-1"
    assert message_key(None, 9) == message_key("", 9) == "events-seq:9"
    assert message_headers("events.ns.a", {"X-Trace": "t"}) == {"x-trace": "t", "nats-subject": "events.ns.a"}
    assert throttle_delay(60_000 * 5 + 15_000) == 45.0
    assert throttle_delay(60_000 * 5 + 59_900) == 1.0


def test_durables_differ_for_a_recreated_feed() -> None:
    def reg(created: int) -> FeedRegistration:
        return FeedRegistration(
            namespace="ns", trigger="t", feed="f", provider="natsFeed", subject="u", created=created
        )

    assert durable_of(reg(1)) == durable_of(reg(1)) != durable_of(reg(2))
    assert durable_of(reg(1)).startswith("natsfeed-") and "." not in durable_of(reg(1))
