"""wskdeploy manifests read into a deployment plan: the OpenWhisk catalog's layout, inputs, feeds, rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.client.api_client import ClientError
from squall.client.manifest import input_value, parse_manifest, substitute

# The layout of the openwhisk-catalog's package manifests: project → packages → actions with `function`,
# `version`, `public`, and descriptive annotations.
CATALOG_STYLE = """
project:
    name: WhiskSystem
    packages:
        tools:
            license: Apache-2.0
            version: 0.0.1
            public: true
            annotations:
                description: Building blocks
            actions:
                echo:
                    version: 0.0.1
                    function: echo.js
                    annotations:
                        description: "Returns the input"
                        parameters: [ { "name": "payload", "required": false } ]
                        sampleInput: { "payload": "Five fuzzy felines"}
"""

FULL = """
packages:
    shop:
        inputs:
            region: $REGION
        actions:
            greet:
                function: src/greet.py
                runtime: python:3.11
                inputs:
                    name: string
                    count: { type: integer, default: 3 }
                    url: "https://${HOST}/hook"
                annotations:
                    owner: team
                limits:
                    timeout: 5000
                    memorySize: 128
                web: raw
        sequences:
            pipeline:
                actions: greet, /whisk.system/utils/echo
        triggers:
            tick:
                feed: /whisk.system/alarms/alarm
                inputs:
                    cron: "*/5 * * * *"
            orders:
                inputs:
                    source: shop
        rules:
            on-tick:
                trigger: tick
                action: pipeline
"""


def write_sources(base: Path) -> None:
    (base / "src").mkdir()
    (base / "src" / "greet.py").write_text("def main(args):\n    return args\n")
    (base / "echo.js").write_text("function main(p) { return p }\n")


def test_a_catalog_manifest_deploys_its_package_and_actions(tmp_path: Path) -> None:
    write_sources(tmp_path)
    plan = parse_manifest(CATALOG_STYLE, tmp_path, {})
    assert plan.project == "WhiskSystem"
    package, action = plan.entities
    assert (package.collection, package.name, package.body["publish"]) == ("packages", "tools", True)
    assert package.body["annotations"] == [{"key": "description", "value": "Building blocks"}]
    assert (action.collection, action.name) == ("actions", "tools/echo")
    assert action.body["exec"]["kind"] == "nodejs:default"
    assert {"key": "sampleInput", "value": {"payload": "Five fuzzy felines"}} in action.body["annotations"]


def test_every_kind_of_entity_in_dependency_order(tmp_path: Path) -> None:
    write_sources(tmp_path)
    plan = parse_manifest(FULL, tmp_path, {"REGION": "eu", "HOST": "example.org"})
    assert [(e.collection, e.name) for e in plan.entities] == [
        ("packages", "shop"),
        ("actions", "shop/greet"),
        ("actions", "shop/pipeline"),
        ("triggers", "tick"),
        ("triggers", "orders"),
        ("rules", "on-tick"),
    ]
    package, greet, pipeline, tick, orders, rule = plan.entities
    assert package.body["parameters"] == [{"key": "region", "value": "eu"}]
    assert greet.body["exec"]["kind"] == "python:3.11"
    assert greet.body["parameters"] == [
        {"key": "name", "value": ""},
        {"key": "count", "value": 3},
        {"key": "url", "value": "https://example.org/hook"},
    ]
    annotations = {a["key"]: a["value"] for a in greet.body["annotations"]}
    assert annotations == {"owner": "team", "web-export": True, "raw-http": True, "final": True}
    assert greet.body["limits"] == {"timeout": 5000, "memory": 128}
    assert pipeline.body["exec"] == {
        "kind": "sequence",
        "components": ["shop/greet", "/whisk.system/utils/echo"],
    }
    assert tick.feed == "/whisk.system/alarms/alarm"
    assert tick.feed_params == {"cron": "*/5 * * * *"}
    assert tick.body["parameters"] == []
    assert {"key": "feed", "value": "/whisk.system/alarms/alarm"} in tick.body["annotations"]
    assert orders.feed is None and orders.body["parameters"] == [{"key": "source", "value": "shop"}]
    assert rule.body == {"trigger": "tick", "action": "shop/pipeline"}


def test_variables_are_substituted_as_wskdeploy_does() -> None:
    env = {"A": "1", "B": "two"}
    assert substitute({"x": "$A", "y": ["${B}-${A}", "$MISSING"], "z": 3}, env) == {
        "x": "1",
        "y": ["two-1", ""],
        "z": 3,
    }


def test_typed_inputs_get_their_zero_values_or_defaults() -> None:
    assert input_value("boolean") is False
    assert input_value({"type": "string", "description": "d"}) == ""
    assert input_value({"type": "integer", "value": 4}) == 4
    assert input_value({"nested": "object"}) == {"nested": "object"}
    assert input_value("a plain value") == "a plain value"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "YAML mapping"),
        ("packages: {}", "no package"),
        ("packages:\n  p:\n    actions:\n      a: {}\n", "function"),
        ("packages:\n  p:\n    rules:\n      r: {trigger: t}\n", "trigger"),
        ("packages: [unclosed", "not valid YAML"),
    ],
)
def test_bad_manifests_are_refused_with_a_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        parse_manifest(text, tmp_path, {})


def test_the_default_package_puts_actions_in_the_namespace(tmp_path: Path) -> None:
    write_sources(tmp_path)
    text = "packages:\n  default:\n    actions:\n      hi:\n        function: echo.js\n    rules:\n      r:\n        trigger: t\n        action: hi\n"
    plan = parse_manifest(text, tmp_path, {})
    assert [(e.collection, e.name) for e in plan.entities] == [("actions", "hi"), ("rules", "r")]
    assert plan.entities[1].body == {"trigger": "t", "action": "hi"}
