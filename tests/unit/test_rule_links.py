"""Rule links on triggers: link, unlink, effective status, active rules and the status request (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import UNSET

from broker import codec
from broker.entities import (
    RULE_ACTIVE,
    RULE_INACTIVE,
    FullyQualifiedName,
    ReducedRule,
    Rule,
    Trigger,
)
from broker.errors import BadRequest
from broker.retry_policy import RetryPolicy
from broker.rule_links import (
    active_rules,
    effective_status,
    key_of,
    link,
    link_of,
    link_rule,
    parse_status,
    rule_key,
    trigger_ref,
    unlink,
)

ACTION = FullyQualifiedName(path="ns", name="hello")
OTHER_ACTION = FullyQualifiedName(path="ns/pkg", name="other")
FILTER: dict[str, Any] = {"type": ["push"], "repo": {"name": [{"prefix": "squall"}]}}
RETRY = RetryPolicy(attempts=5, backoff="fixed")


def trigger(name: str = "t", **fields: Any) -> Trigger:
    return Trigger(namespace="ns", name=name, **fields)


def rule(name: str = "r", trigger_name: str = "t", **fields: Any) -> Rule:
    return Rule(
        namespace="ns",
        name=name,
        trigger=FullyQualifiedName(path="ns", name=trigger_name),
        action=ACTION,
        **fields,
    )


def test_rule_key_is_namespace_slash_name() -> None:
    assert rule_key("ns", "my rule") == "ns/my rule"
    assert key_of(rule("r")) == "ns/r"
    assert trigger_ref(trigger("t")) == FullyQualifiedName(path="ns", name="t")


def test_link_adds_the_rule_to_a_trigger_without_rules() -> None:
    t = trigger()
    assert t.rules is UNSET
    linked = link(t, "ns/r", ACTION, RULE_ACTIVE)
    assert linked is not None
    assert linked.rules == {"ns/r": ReducedRule(action=ACTION, status=RULE_ACTIVE)}
    assert t.rules is UNSET  # pure: the input is not changed


def test_link_shows_as_openwhisk_writes_it() -> None:
    linked = link(trigger(), "ns/r", OTHER_ACTION, RULE_INACTIVE)
    assert linked is not None
    body = codec.to_builtins(linked)
    assert body["rules"] == {"ns/r": {"action": {"path": "ns/pkg", "name": "other"}, "status": "inactive"}}


def test_link_is_none_when_nothing_changes() -> None:
    linked = link(trigger(), "ns/r", ACTION, RULE_ACTIVE)
    assert linked is not None
    assert link(linked, "ns/r", ACTION, RULE_ACTIVE) is None


@pytest.mark.parametrize(
    ("action", "status"),
    [(ACTION, RULE_INACTIVE), (OTHER_ACTION, RULE_ACTIVE), (OTHER_ACTION, RULE_INACTIVE)],
)
def test_link_replaces_a_different_record_and_keeps_other_rules(
    action: FullyQualifiedName, status: str
) -> None:
    t = trigger(rules={"ns/r": ReducedRule(action=ACTION), "ns/s": ReducedRule(action=ACTION)})
    linked = link(t, "ns/r", action, status)
    assert linked is not None and linked.rules is not UNSET
    assert linked.rules["ns/r"] == ReducedRule(action=action, status=status)
    assert linked.rules["ns/s"] == ReducedRule(action=ACTION)


def test_link_refuses_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="changing"):
        link(trigger(), "ns/r", ACTION, "changing")


def test_unlink_removes_only_that_rule() -> None:
    t = trigger(rules={"ns/r": ReducedRule(action=ACTION), "ns/s": ReducedRule(action=ACTION)})
    unlinked = unlink(t, "ns/r")
    assert unlinked is not None
    assert unlinked.rules == {"ns/s": ReducedRule(action=ACTION)}


def test_unlink_of_the_last_rule_leaves_an_empty_map_as_openwhisk_does() -> None:
    unlinked = unlink(trigger(rules={"ns/r": ReducedRule(action=ACTION)}), "ns/r")
    assert unlinked is not None
    assert unlinked.rules == {}
    assert codec.to_builtins(unlinked)["rules"] == {}


@pytest.mark.parametrize(
    "t", [trigger(), trigger(rules={}), trigger(rules={"ns/s": ReducedRule(action=ACTION)})]
)
def test_unlink_is_none_when_the_rule_is_not_linked(t: Trigger) -> None:
    assert unlink(t, "ns/r") is None


def test_a_rule_whose_trigger_is_gone_reads_inactive() -> None:
    assert effective_status(rule(), None) == RULE_INACTIVE


def test_a_rule_reads_the_status_its_trigger_records() -> None:
    r = rule()
    for status in (RULE_ACTIVE, RULE_INACTIVE):
        t = link(trigger(), key_of(r), ACTION, status)
        assert effective_status(r, t) == status


def test_a_rule_its_trigger_does_not_list_reads_inactive() -> None:
    r = rule()
    assert effective_status(r, trigger()) == RULE_INACTIVE
    assert effective_status(r, trigger(rules={"ns/other": ReducedRule(action=ACTION)})) == RULE_INACTIVE


def test_another_triggers_link_cannot_make_a_rule_active() -> None:
    # A stale link on the rule's previous trigger must not count once the rule points elsewhere.
    r = rule(trigger_name="new")
    old = trigger("old", rules={key_of(r): ReducedRule(action=ACTION, status=RULE_ACTIVE)})
    assert effective_status(r, old) == RULE_INACTIVE


def test_link_of_reads_one_record() -> None:
    t = trigger(rules={"ns/r": ReducedRule(action=ACTION, status=RULE_INACTIVE)})
    assert link_of(t, "ns/r") == ReducedRule(action=ACTION, status=RULE_INACTIVE)
    assert link_of(t, "ns/x") is None
    assert link_of(None, "ns/r") is None


def test_active_rules_are_the_ones_a_fire_runs() -> None:
    t = trigger(
        rules={
            "ns/on": ReducedRule(action=ACTION, status=RULE_ACTIVE),
            "ns/off": ReducedRule(action=ACTION, status=RULE_INACTIVE),
        }
    )
    assert set(active_rules(t)) == {"ns/on"}
    assert active_rules(trigger()) == {}


@pytest.mark.parametrize("status", [RULE_ACTIVE, RULE_INACTIVE])
def test_parse_status_accepts_the_two_states(status: str) -> None:
    assert parse_status(status) == status


@pytest.mark.parametrize(
    ("value", "shown"),
    [("xxx", "xxx"), ("Active", "Active"), ("", ""), (5, "5"), (["active"], '["active"]'), ({}, "{}")],
)
def test_parse_status_refuses_anything_else_in_openwhisks_words(value: object, shown: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_status(value)
    assert caught.value.message == (
        f"The request content was malformed:\nrequirement failed: {shown} is not a recognized rule state"
    )


def test_parse_status_refuses_a_missing_status() -> None:
    with pytest.raises(BadRequest, match="key not found: status"):
        parse_status(None)


def test_links_round_trip_through_the_codec() -> None:
    linked = link(trigger(), "ns/r", OTHER_ACTION, RULE_INACTIVE)
    assert linked is not None
    assert codec.decode(codec.encode(linked), Trigger) == linked


def test_link_carries_the_filter_and_retry_policy() -> None:
    linked = link(trigger(), "ns/r", ACTION, RULE_ACTIVE, filter=FILTER, retry=RETRY)
    assert linked is not None
    assert linked.rules == {
        "ns/r": ReducedRule(action=ACTION, status=RULE_ACTIVE, filter=FILTER, retry=RETRY)
    }
    assert codec.to_builtins(linked)["rules"]["ns/r"] == {
        "action": {"path": "ns", "name": "hello"},
        "status": "active",
        "filter": FILTER,
        "retry": {"attempts": 5, "backoff": "fixed", "on": list(RETRY.on)},
    }
    assert codec.decode(codec.encode(linked), Trigger) == linked


def test_a_link_without_filter_or_retry_has_no_such_keys() -> None:
    linked = link(trigger(), "ns/r", ACTION, RULE_ACTIVE)
    assert linked is not None
    assert set(codec.to_builtins(linked)["rules"]["ns/r"]) == {"action", "status"}


def test_link_is_none_when_filter_and_retry_are_already_exactly_those() -> None:
    linked = link(trigger(), "ns/r", ACTION, RULE_ACTIVE, filter=FILTER, retry=RETRY)
    assert linked is not None
    same_filter = {"type": ["push"], "repo": {"name": [{"prefix": "squall"}]}}  # equal, not identical
    same_retry = RetryPolicy(attempts=5, backoff="fixed")
    assert link(linked, "ns/r", ACTION, RULE_ACTIVE, filter=same_filter, retry=same_retry) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"filter": {"type": ["pull"]}, "retry": RETRY},  # another filter
        {"retry": RETRY},  # the filter removed
        {"filter": FILTER, "retry": RetryPolicy(attempts=2)},  # another policy
        {"filter": FILTER},  # the policy removed
        {},  # both removed
    ],
)
def test_link_rewrites_a_record_whose_filter_or_retry_changed(fields: dict[str, Any]) -> None:
    linked = link(trigger(), "ns/r", ACTION, RULE_ACTIVE, filter=FILTER, retry=RETRY)
    assert linked is not None
    relinked = link(linked, "ns/r", ACTION, RULE_ACTIVE, **fields)
    assert relinked is not None and relinked.rules is not UNSET
    assert relinked.rules["ns/r"] == ReducedRule(action=ACTION, status=RULE_ACTIVE, **fields)


def test_link_rule_links_what_the_rule_record_says() -> None:
    r = rule(filter=FILTER, retry=RETRY)
    linked = link_rule(trigger(), r, RULE_INACTIVE)
    assert linked is not None
    assert link_of(linked, key_of(r)) == ReducedRule(
        action=ACTION, status=RULE_INACTIVE, filter=FILTER, retry=RETRY
    )
    assert link_rule(linked, r, RULE_INACTIVE) is None
    plain = link_rule(trigger(), rule(), RULE_ACTIVE)
    assert plain is not None
    assert link_of(plain, "ns/r") == ReducedRule(action=ACTION, status=RULE_ACTIVE)
