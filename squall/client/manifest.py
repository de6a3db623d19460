"""wskdeploy's manifest format read into a deployment plan (pure): packages, actions with inputs and
annotations, sequences, triggers with feeds and inputs, rules; `$VAR` and `${VAR}` from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from squall.client import args
from squall.client.api_client import ClientError

DEFAULT_PACKAGE: Final = "default"
# wskdeploy's input types: a parameter declared by its type alone gets the type's zero value.
TYPE_DEFAULTS: Final[dict[str, Any]] = {
    "string": "",
    "integer": 0,
    "float": 0.0,
    "boolean": False,
    "json": {},
    "password": "",
}
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
LIMIT_KEYS: Final = {
    "timeout": "timeout",
    "memorySize": "memory",
    "logSize": "logs",
    "concurrentActivations": "concurrency",
}


@dataclass(frozen=True)
class Entity:
    """One entity to PUT: `collection` (packages, actions, triggers, rules), its `[pkg/]name`, its body."""

    collection: str
    name: str
    body: dict[str, Any]
    feed: str | None = None  # a trigger's feed action
    feed_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    project: str | None
    entities: list[Entity]

    def of(self, collection: str) -> list[Entity]:
        return [e for e in self.entities if e.collection == collection]


def substitute(value: Any, env: Mapping[str, str]) -> Any:
    """wskdeploy's interpolation: a string that is `$VAR` becomes the variable's value; `${VAR}` is replaced
    inside any string; in lists and mappings, every string. An unset variable is empty."""
    if isinstance(value, str):
        whole = _WHOLE.fullmatch(value)
        if whole:
            return env.get(whole.group(1), "")
        return _BRACED.sub(lambda m: env.get(m.group(1), ""), value)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value


def input_value(spec: Any) -> Any:
    """One `inputs` entry: a value, a type name alone (its zero value), or `{type, value|default, …}`."""
    if isinstance(spec, str) and spec in TYPE_DEFAULTS:
        return TYPE_DEFAULTS[spec]
    if (
        isinstance(spec, dict)
        and ("type" in spec or "value" in spec or "default" in spec)
        and set(spec)
        <= {
            "type",
            "value",
            "default",
            "description",
            "required",
        }
    ):
        if "value" in spec:
            return spec["value"]
        if "default" in spec:
            return spec["default"]
        return TYPE_DEFAULTS.get(str(spec.get("type")), "")
    return spec


def key_values(mapping: Mapping[str, Any] | None, *, inputs: bool = False) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": input_value(v) if inputs else v} for k, v in (mapping or {}).items()]


def web_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).lower() if not isinstance(value, bool) else ("true" if value else "false")


def action_entity(package: str | None, name: str, spec: Mapping[str, Any], base: Path) -> Entity:
    exec_: dict[str, Any]
    runtime = spec.get("runtime") or spec.get("kind")
    if spec.get("code") is not None:
        if not runtime:
            raise ClientError(f"Action {name}: inline `code` needs a `runtime`.")
        exec_ = {"kind": runtime, "code": str(spec["code"])}
        if spec.get("main"):
            exec_["main"] = spec["main"]
    elif spec.get("function") or spec.get("location"):
        source = base / str(spec.get("function") or spec.get("location"))
        exec_ = args.code_exec(str(source), runtime, spec.get("main"))
    else:
        raise ClientError(f"Action {name}: give `function` (a file) or `code`.")
    annotations = dict(spec.get("annotations") or {})
    web = web_value(spec.get("web", spec.get("web-export")))
    annotations |= args.web_annotations(web, None) if web is not None else {}
    if spec.get("web-secure") is not None:
        annotations |= args.web_annotations(None, str(spec["web-secure"]))
    body: dict[str, Any] = {
        "exec": exec_,
        "parameters": key_values(spec.get("inputs"), inputs=True),
        "annotations": key_values(annotations),
    }
    limits = {LIMIT_KEYS[k]: v for k, v in (spec.get("limits") or {}).items() if k in LIMIT_KEYS}
    if limits:
        body["limits"] = limits
    return Entity("actions", qualified(package, name), body)


def qualified(package: str | None, name: str) -> str:
    return f"{package}/{name}" if package else name


def in_package(package: str | None, ref: str) -> str:
    """wskdeploy's resolution of an action named in a sequence or a rule: a bare name is in this package."""
    if ref.startswith("/") or "/" in ref or not package:
        return ref
    return f"{package}/{ref}"


def package_entities(name: str, spec: Mapping[str, Any], base: Path) -> list[Entity]:
    package = None if name == DEFAULT_PACKAGE else name
    found: list[Entity] = []
    if package:
        body: dict[str, Any] = {
            "parameters": key_values(spec.get("inputs"), inputs=True),
            "annotations": key_values(spec.get("annotations")),
            "publish": bool(spec.get("public", spec.get("shared", False))),
        }
        found.append(Entity("packages", package, body))
    for action, action_spec in (spec.get("actions") or {}).items():
        found.append(action_entity(package, str(action), action_spec or {}, base))
    for sequence, seq_spec_raw in (spec.get("sequences") or {}).items():
        seq_spec = seq_spec_raw or {}
        components = [c.strip() for c in str(seq_spec.get("actions", "")).split(",") if c.strip()]
        if not components:
            raise ClientError(f"Sequence {sequence}: `actions` lists no action.")
        annotations = dict(seq_spec.get("annotations") or {})
        web = web_value(seq_spec.get("web", seq_spec.get("web-export")))
        annotations |= args.web_annotations(web, None) if web is not None else {}
        found.append(
            Entity(
                "actions",
                qualified(package, str(sequence)),
                {
                    "exec": {"kind": "sequence", "components": [in_package(package, c) for c in components]},
                    "annotations": key_values(annotations),
                },
            )
        )
    for trigger, trigger_spec_raw in (spec.get("triggers") or {}).items():
        trigger_spec = trigger_spec_raw or {}
        feed = trigger_spec.get("feed") or trigger_spec.get("source")
        inputs = {p["key"]: p["value"] for p in key_values(trigger_spec.get("inputs"), inputs=True)}
        listed = key_values(trigger_spec.get("annotations"))
        if feed:
            body = {"annotations": args.merge_annotations(listed, {"feed": str(feed)}), "parameters": []}
            found.append(Entity("triggers", str(trigger), body, feed=str(feed), feed_params=inputs))
        else:
            body = {
                "annotations": annotations,
                "parameters": [{"key": k, "value": v} for k, v in inputs.items()],
            }
            found.append(Entity("triggers", str(trigger), body))
    for rule, rule_spec_raw in (spec.get("rules") or {}).items():
        rule_spec = rule_spec_raw or {}
        if not rule_spec.get("trigger") or not rule_spec.get("action"):
            raise ClientError(f"Rule {rule}: give `trigger` and `action`.")
        body = {"trigger": str(rule_spec["trigger"]), "action": in_package(package, str(rule_spec["action"]))}
        found.append(Entity("rules", str(rule), body))
    return found


ORDER: Final = {"packages": 0, "actions": 1, "triggers": 2, "rules": 3}


def parse_manifest(text: str, base: Path, env: Mapping[str, str]) -> Plan:
    """The plan of a manifest: packages first, then actions (sequences after the actions they name), then
    triggers and rules, so that each PUT finds what it refers to."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClientError(f"The manifest is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ClientError("The manifest must be a YAML mapping (with `project`, `packages` or `package`).")
    document = substitute(document, env)
    project = document.get("project") if isinstance(document.get("project"), dict) else None
    root = project or document
    packages: dict[str, Any] = dict(root.get("packages") or {})
    single = root.get("package")
    if isinstance(single, dict):
        packages[str(single.get("name", DEFAULT_PACKAGE))] = single
    if not packages:
        raise ClientError("The manifest declares no package.")
    entities: list[Entity] = []
    for name, spec in packages.items():
        entities += package_entities(str(name), spec or {}, base)
    # Sequences last among actions: stable sort keeps manifest order within a kind.
    entities.sort(key=lambda e: (ORDER[e.collection], e.body.get("exec", {}).get("kind") == "sequence"))
    title = project.get("name") if project else None
    return Plan(project=str(title) if title else None, entities=entities)
