"""The live stream's pure decisions: which records a filter lets through, its subject, where history ends."""

from __future__ import annotations

import pytest

from broker.activation_filter import (
    NO_FILTER,
    ActivationFilter,
    history_range,
    kind_of,
    matches,
    subject_filter,
)
from broker.activations import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS, Activation, make_response
from broker.entities import KeyValue

FIRE = "f" * 32


def record(
    name: str = "a", status: str = SUCCESS, *, package: str = "", trigger: bool = False, **kw: object
) -> Activation:
    path = f"ns/{package}/{name}" if package else f"ns/{name}"
    annotations = (
        [] if trigger else [KeyValue(key="path", value=path), KeyValue(key="kind", value="nodejs:20")]
    )
    values: dict[str, object] = {
        "namespace": "ns",
        "name": name,
        "subject": "ns",
        "activationId": "a" * 32,
        "start": 1000,
        "response": make_response(status),
        "logs": [],
        "version": "0.0.1",
        "publish": False,
        "annotations": annotations,
    }
    values.update(kw)
    return Activation(**values)  # type: ignore[arg-type]


def test_no_filter_passes_everything_and_is_empty() -> None:
    assert NO_FILTER.empty and not ActivationFilter(kind="action").empty
    assert matches(NO_FILTER, record(status=DEVELOPER_ERROR))


def test_name_with_and_without_package() -> None:
    assert matches(ActivationFilter(name="a"), record())
    assert not matches(ActivationFilter(name="a"), record(package="pkg"))
    assert matches(ActivationFilter(name="pkg/a"), record(package="pkg"))


@pytest.mark.parametrize(
    ("wanted", "status", "passes"),
    [
        ("success", SUCCESS, True),
        ("success", APPLICATION_ERROR, False),
        ("failed", APPLICATION_ERROR, True),
        ("failed", DEVELOPER_ERROR, True),
        ("failed", SUCCESS, False),
        (APPLICATION_ERROR, APPLICATION_ERROR, True),
        (APPLICATION_ERROR, DEVELOPER_ERROR, False),
    ],
)
def test_status(wanted: str, status: str, passes: bool) -> None:
    assert matches(ActivationFilter(status=wanted), record(status=status)) is passes


def test_kind_cause_and_since() -> None:
    fire = record("t", trigger=True, activationId=FIRE)
    caused = record(cause=FIRE)
    assert (kind_of(fire), kind_of(caused)) == ("trigger", "action")
    assert matches(ActivationFilter(kind="trigger"), fire) and not matches(
        ActivationFilter(kind="trigger"), caused
    )
    by_cause = ActivationFilter(cause=FIRE)
    assert matches(by_cause, fire) and matches(by_cause, caused) and not matches(by_cause, record())
    assert matches(ActivationFilter(since=1000), record()) and not matches(
        ActivationFilter(since=1001), record()
    )


def test_a_name_filter_narrows_the_subject() -> None:
    assert subject_filter("ns", NO_FILTER) == "activation.ns.>"
    assert subject_filter("ns", ActivationFilter(name="pkg/a")) == "activation.ns.pkg=2Fa"


def test_history_ends_where_jetstream_begins() -> None:
    assert history_range(10, 0) is None  # an empty stream
    assert history_range(10, 11) is None  # JetStream holds the next position
    assert history_range(10, 5) is None
    assert history_range(10, 50) == (10, 50)
