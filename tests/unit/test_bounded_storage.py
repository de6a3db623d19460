"""Pure decisions of bounded storage and the smaller leaks: entity summaries, dead-letter trimming, the guest
seeding rule, a full stream's error, and the quotas in the limits document."""

from __future__ import annotations

import nats.js.errors
from msgspec import UNSET

from api.errors import status_of
from broker.config import GUEST_KEY, Settings
from broker.dead_letters import LetterRef, oldest_past
from broker.entities import Action, Exec, FullyQualifiedName, KeyValue, Package, ReducedRule, Trigger
from broker.entity_summary import (
    KIND_HEADER,
    SUMMARY_HEADER,
    SUMMARY_MAX_BYTES,
    kind_of,
    read_summary,
    summary_headers,
    summary_of,
)
from broker.errors import QuotaExceeded, StorageFull
from broker.limits import effective_limits, namespace_defaults
from broker.namespaces import NamespaceLimits
from broker.nats_errors import translate
from squall.standalone import should_seed_guest


def test_action_summary_drops_code_and_parameters_and_keeps_what_listings_show() -> None:
    action = Action(
        namespace="ns",
        name="a",
        exec=Exec(kind="python:3.11", code="x" * 1000, binary=False, main="run"),
        parameters=[KeyValue(key="secret", value="s")],
        annotations=[KeyValue(key="web-export", value=True)],
    )
    summary = summary_of(action)
    assert summary.exec.code is UNSET and summary.parameters == []
    assert (summary.exec.kind, summary.exec.binary, summary.exec.main) == ("python:3.11", False, "run")
    assert summary.annotations == action.annotations and summary.limits == action.limits


def test_trigger_and_package_summaries_drop_parameters_and_rules() -> None:
    rules = {"ns/r": ReducedRule(action=FullyQualifiedName(path="ns", name="a"))}
    trigger = Trigger(namespace="ns", name="t", parameters=[KeyValue(key="k", value=1)], rules=rules)
    assert summary_of(trigger).parameters == [] and summary_of(trigger).rules is UNSET
    package = Package(namespace="ns", name="p", parameters=[KeyValue(key="k", value=1)], publish=True)
    assert summary_of(package).parameters == [] and summary_of(package).publish


def test_summary_headers_round_trip_and_are_one_line_of_ascii() -> None:
    action = Action(
        namespace="ns",
        name="ünï",
        exec=Exec(kind="nodejs:20", code="c"),
        annotations=[KeyValue(key="description", value="line one\r\nline two ✓")],
    )
    headers = summary_headers("actions", action)
    assert kind_of(headers) == "actions"
    assert headers[SUMMARY_HEADER].isascii() and "\n" not in headers[SUMMARY_HEADER]
    assert read_summary(headers, Action) == summary_of(action)


def test_a_summary_too_large_for_a_header_is_left_out() -> None:
    huge = [KeyValue(key="big", value="x" * (SUMMARY_MAX_BYTES + 1))]
    headers = summary_headers(
        "actions", Action(namespace="ns", name="a", exec=Exec(kind="python:3.11"), annotations=huge)
    )
    assert headers == {KIND_HEADER: "actions"}
    assert read_summary(headers, Action) is None
    assert read_summary({SUMMARY_HEADER: "not base64!"}, Action) is None
    assert read_summary(None, Action) is None and kind_of(None) is None


def test_dead_letters_past_the_quota_are_the_oldest() -> None:
    refs = [LetterRef(seq=s, subject=f"deadletter.ns.{s}") for s in (5, 1, 9, 3)]
    assert [r.seq for r in oldest_past(refs, 2)] == [1, 3]
    assert oldest_past(refs, 4) == [] and oldest_past(refs, 10) == []
    assert len(oldest_past(refs, 0)) == 4


def test_guest_is_seeded_on_the_first_boot_or_when_the_operator_chose_its_key() -> None:
    assert should_seed_guest(first_boot=True, guest_key=GUEST_KEY)
    assert not should_seed_guest(first_boot=False, guest_key=GUEST_KEY)  # rotated keys stay rotated
    assert should_seed_guest(first_boot=False, guest_key="11111111-2222-3333-4444-555555555555:own")


def test_a_full_stream_is_a_503_never_a_500() -> None:
    err = nats.js.errors.APIError(code=503, err_code=10077, description="maximum bytes exceeded")
    translated = translate(err, "publishing to invoke.ns.a")
    assert isinstance(translated, StorageFull)
    assert status_of(translated) == 503
    assert status_of(QuotaExceeded("full")) == 403


def test_quotas_are_in_the_limits_document_with_overrides() -> None:
    defaults = namespace_defaults(Settings(entities_per_namespace=50, deadletters_per_namespace=7))
    plain = effective_limits(NamespaceLimits(), defaults)
    assert (plain.maxEntities, plain.maxDeadLetters) == (50, 7)
    own = effective_limits(NamespaceLimits(maxEntities=3, maxDeadLetters=0), defaults)
    assert (own.maxEntities, own.maxDeadLetters) == (3, 0)
