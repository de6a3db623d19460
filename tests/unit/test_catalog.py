"""The catalog's data (what whisk.system holds) and the installer's decisions (what to create, update, delete)."""

from __future__ import annotations

import msgspec
import pytest

from broker import params
from broker.config import Settings
from broker.entities import Action, Package
from squall.catalog import feed_actions, feed_providers
from squall.catalog.installer import Existing, Step, plan
from squall.catalog.manifest import (
    DIGEST_ANNOTATION,
    CatalogEntity,
    action_source,
    catalog_entities,
    digest_of,
    manifest,
)

NS = "whisk.system"
UTILS = ["cat", "date", "echo", "head", "sort", "split", "smash", "hosturl", "namespace"]
SAMPLES = ["hello", "greeting", "wordcount"]


def by_path() -> dict[str, CatalogEntity]:
    return {e.path: e for e in catalog_entities(NS)}


def annotation(entity: Package | Action, key: str) -> object:
    return params.lookup(entity.annotations, key)


def test_the_catalog_holds_utils_samples_and_the_feed_packages() -> None:
    found = by_path()
    assert {p for p, e in found.items() if isinstance(e.entity, Package)} == {
        "utils",
        "samples",
        "alarms",
        "webhooks",
        "messaging",
    }
    assert {p for p in found if p.startswith("utils/")} == {f"utils/{n}" for n in UTILS}
    assert {p for p in found if p.startswith("samples/")} == {f"samples/{n}" for n in SAMPLES}


def test_every_entity_is_published_and_documented() -> None:
    for entity in catalog_entities(NS):
        assert entity.entity.publish is True, entity.path
        assert isinstance(annotation(entity.entity, "description"), str), entity.path
        assert annotation(entity.entity, DIGEST_ANNOTATION) == entity.digest
        assert entity.entity.version == "0.0.1"


def test_actions_are_built_as_the_api_builds_them() -> None:
    echo = by_path()["utils/echo"].entity
    assert isinstance(echo, Action)
    assert echo.namespace == f"{NS}/utils"
    assert echo.name == "echo"
    assert echo.exec.kind == "nodejs:18"
    assert echo.exec.binary is False
    assert echo.exec.code == action_source("utils/echo.js")
    assert annotation(echo, "exec") == "nodejs:18"
    assert annotation(echo, "provide-api-key") is False
    assert echo.limits.timeout == 60000


def test_openwhisk_parameter_documentation_is_kept() -> None:
    head = by_path()["utils/head"].entity
    assert annotation(head, "parameters") == [
        {"name": "lines", "required": True, "type": "array", "description": "An array of strings"},
        {"name": "num", "required": False, "type": "integer", "description": "The length of the prefix"},
    ]
    assert annotation(head, "sampleOutput") == {"lines": [4, 2], "num": 2}


def test_feed_actions_carry_the_feeds_role_contract() -> None:
    assert feed_providers() == {
        "alarms/alarm": "alarm",
        "alarms/interval": "interval",
        "alarms/once": "once",
        "webhooks/webhook": "webhook",
        "messaging/natsFeed": "natsFeed",
    }
    assert feed_actions("sys")["/sys/alarms/alarm"] == "alarm"
    found = by_path()
    stub = action_source("feeds/stub.js")
    for path, provider in feed_providers().items():
        action = found[path].entity
        assert isinstance(action, Action)
        assert annotation(action, "feed") is True
        assert annotation(action, "squall-feed") == provider
        assert action.exec.kind == "nodejs:18"
        assert action.exec.code == stub
    for path, entity in found.items():
        if path not in feed_providers():
            assert not params.has_key(entity.entity.annotations, "feed"), path


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (
            "alarms/alarm",
            ["cron", "timezone", "startDate", "stopDate", "strict", "trigger_payload", "maxTriggers"],
        ),
        ("alarms/interval", ["minutes", "startDate", "stopDate", "trigger_payload"]),
        ("alarms/once", ["date", "deleteAfterFire", "trigger_payload"]),
        ("webhooks/webhook", ["secret", "scheme"]),
        ("messaging/natsFeed", ["subject"]),
    ],
)
def test_feed_parameters_are_documented(path: str, names: list[str]) -> None:
    documented = annotation(by_path()[path].entity, "parameters")
    assert isinstance(documented, list)
    assert [p["name"] for p in documented] == names


def test_the_alarms_package_binds_an_empty_trigger_payload() -> None:
    alarms = by_path()["alarms"].entity
    assert isinstance(alarms, Package)
    assert [(p.key, p.value) for p in alarms.parameters] == [("trigger_payload", "")]


def test_the_digest_follows_the_definition_not_the_version_or_time() -> None:
    echo = by_path()["utils/echo"]
    entity = echo.entity
    assert isinstance(entity, Action)
    without = msgspec.structs.replace(entity, annotations=entity.annotations[:-1])
    assert digest_of(without) == echo.digest
    assert digest_of(msgspec.structs.replace(without, version="0.0.7", updated=123)) == echo.digest
    changed = msgspec.structs.replace(without, exec=msgspec.structs.replace(entity.exec, code="x"))
    assert digest_of(changed) != echo.digest
    assert by_path()["utils/echo"].digest == echo.digest  # stable from one build to the next


def test_the_packages_come_before_their_actions() -> None:
    seen: set[str] = set()
    for entity in catalog_entities(NS):
        if isinstance(entity.entity, Action):
            assert entity.path.split("/")[0] in seen, entity.path
        else:
            seen.add(entity.path)


def test_every_action_source_is_packaged() -> None:
    for package in manifest().packages.values():
        for action in package.actions.values():
            if isinstance(action.code, str):
                assert "function main" in action_source(action.code)


# -- the plan ---------------------------------------------------------------------------------------------


def existing_of(entities: list[CatalogEntity]) -> list[Existing]:
    return [Existing(e.collection, e.path, e.digest) for e in entities]


def test_an_empty_namespace_gets_everything_created_in_order() -> None:
    wanted = catalog_entities(NS)
    steps = plan(wanted, [])
    assert [s.op for s in steps] == ["create"] * len(wanted)
    assert [s.path for s in steps] == [e.path for e in wanted]


def test_an_installed_catalog_needs_nothing() -> None:
    wanted = catalog_entities(NS)
    assert plan(wanted, existing_of(wanted)) == []


def test_a_changed_definition_is_an_update() -> None:
    wanted = catalog_entities(NS)
    existing = [
        Existing(e.collection, e.path, "old" if e.path == "utils/sort" else e.digest)
        for e in existing_of(wanted)
    ]
    steps = plan(wanted, existing)
    assert [(s.op, s.path) for s in steps] == [("update", "utils/sort")]
    assert steps[0].wanted is not None and steps[0].wanted.path == "utils/sort"


def test_an_entity_without_a_digest_is_taken_over_when_the_catalog_names_it() -> None:
    wanted = catalog_entities(NS)
    existing = [Existing(e.collection, e.path, None if e.path == "utils" else e.digest) for e in wanted]
    assert [(s.op, s.path) for s in plan(wanted, existing)] == [("update", "utils")]


def test_what_a_release_dropped_is_deleted_actions_before_packages() -> None:
    wanted = catalog_entities(NS)
    existing = [
        Existing("packages", "retired", "d1"),
        *existing_of(wanted),
        Existing("actions", "retired/old", "d2"),
        Existing("actions", "utils/gone", "d3"),
    ]
    assert plan(wanted, existing) == [
        Step("delete", "actions", "retired/old"),
        Step("delete", "actions", "utils/gone"),
        Step("delete", "packages", "retired"),
    ]


def test_entities_the_catalog_never_installed_are_left_alone() -> None:
    wanted = catalog_entities(NS)
    existing = [
        *existing_of(wanted),
        Existing("actions", "utils/mine", None),
        Existing("packages", "own", None),
    ]
    assert plan(wanted, existing) == []


def test_the_system_namespace_is_a_setting() -> None:
    assert Settings().system_namespace == "whisk.system"
    assert Settings.from_env({"SQUALL_SYSTEM_NAMESPACE": "sys.catalog"}).system_namespace == "sys.catalog"
