"""The lifecycle's pure decisions: which event, which trigger, which provider."""

from __future__ import annotations

import pytest

from broker.entities import Action, Exec, KeyValue
from broker.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from broker.feed_registry import FEED_PROVIDER_ANNOTATION, feed_provider_of
from feeds.lifecycle import lifecycle_event, status_of, trigger_of
from feeds.providers import provider_parameters


@pytest.mark.parametrize("raw", ["CREATE", "create", " Read ", "UNPAUSE"])
def test_lifecycle_events_are_read_case_insensitively(raw: str) -> None:
    assert lifecycle_event({"lifecycleEvent": raw}) == raw.strip().upper()


@pytest.mark.parametrize("params", [{}, {"lifecycleEvent": "RESTART"}, {"lifecycleEvent": 1}])
def test_other_events_are_a_400_naming_the_parameter(params: dict[str, object]) -> None:
    with pytest.raises(BadRequest, match="lifecycleEvent"):
        lifecycle_event(params)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/_/t", ("mine", "t")),
        ("/mine/t", ("mine", "t")),
        ("/other/t", ("other", "t")),
        ("other/t", ("other", "t")),
        ("t", ("mine", "t")),
    ],
)
def test_trigger_names_resolve_underscore_to_the_keys_namespace(raw: str, expected: tuple[str, str]) -> None:
    assert trigger_of({"triggerName": raw}, "mine") == expected


@pytest.mark.parametrize("raw", [None, "", "/", 3])
def test_a_missing_trigger_name_is_a_400(raw: object) -> None:
    with pytest.raises(BadRequest, match="triggerName"):
        trigger_of({"triggerName": raw}, "mine")


def test_refusals_carry_their_http_status() -> None:
    assert [status_of(e) for e in (BadRequest(), Forbidden(), NotFound(), Conflict(), Unavailable())] == [
        400,
        403,
        404,
        409,
        500,
    ]


def test_protocol_parameters_are_not_configuration() -> None:
    params = {"lifecycleEvent": "CREATE", "triggerName": "/_/t", "authKey": "k", "cron": "* * * * *"}
    assert provider_parameters(params) == {"cron": "* * * * *"}


def test_only_the_system_namespaces_annotated_actions_are_feeds() -> None:
    annotated = Action(
        namespace="whisk.system/alarms",
        name="alarm",
        exec=Exec(kind="nodejs:18", code="x"),
        annotations=[KeyValue(key=FEED_PROVIDER_ANNOTATION, value="alarm")],
    )
    assert feed_provider_of(annotated, "whisk.system", "whisk.system") == "alarm"
    assert feed_provider_of(annotated, "guest", "whisk.system") is None
    plain = Action(namespace="whisk.system/utils", name="echo", exec=Exec(kind="nodejs:18", code="x"))
    assert feed_provider_of(plain, "whisk.system", "whisk.system") is None
