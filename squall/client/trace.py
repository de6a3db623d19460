"""`squall activation trace ID`: everything one trigger fire caused, as a tree: the trigger record → each
rule's run (from the trigger record's logs) → a sequence's components (`cause`) → retries (`attempt`,
`retryOf`: ids derived from the first attempt's) → the dead letter, and its redrive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import click
from rich.text import Text
from rich.tree import Tree

from broker.dead_letters import REDRIVE_ATTEMPT
from broker.trigger_events import attempt_activation_id
from squall.client import args
from squall.client.api_client import ClientError, segment
from squall.client.cmd_activation import activation_group, record_path
from squall.client.names import collection_path
from squall.client.output import STATUS_STYLES, status_of
from squall.client.session import Session, client_command

MAX_ATTEMPTS: Final = 100  # past any retry policy's attempts
Fetch = Callable[[str], dict[str, Any] | None]


def is_trigger_record(record: dict[str, Any]) -> bool:
    return args.annotation(record, "kind") is None and not record.get("end")


def rule_lines(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A trigger record's logs: one JSON object per rule (lines that are not are skipped)."""
    found = []
    for line in record.get("logs") or []:
        try:
            parsed = json.loads(line)
        except (TypeError, ValueError):
            continue
        if isinstance(parsed, dict):
            found.append(parsed)
    return found


def run_node(record: dict[str, Any], role: str, fetch: Fetch) -> dict[str, Any]:
    node: dict[str, Any] = {
        "role": role,
        "activationId": record.get("activationId"),
        "name": args.annotation(record, "path") or f"{record.get('namespace')}/{record.get('name')}",
        "status": status_of(record),
        "kind": args.annotation(record, "kind") or "trigger",
    }
    if record.get("duration") is not None:
        node["duration"] = record["duration"]
    result = (record.get("response") or {}).get("result")
    if node["status"] != "success" and isinstance(result, dict) and "error" in result:
        node["error"] = result["error"]
    attempt = args.annotation(record, "attempt")
    if attempt is not None:
        node["attempt"] = attempt
    if node["kind"] == "sequence":
        node["components"] = [
            run_node(found, "component", fetch)
            if (found := fetch(str(cid)))
            else pending(str(cid), "component")
            for cid in record.get("logs") or []
        ]
    return node


def pending(activation_id: str, role: str) -> dict[str, Any]:
    return {"role": role, "activationId": activation_id, "status": "not recorded (yet)"}


def rule_run(line: dict[str, Any], fetch: Fetch, letter: Fetch) -> dict[str, Any]:
    """One rule's outcome: its attempts in order, its dead letter, and the letter's redrive."""
    node: dict[str, Any] = {"role": "rule", "rule": line.get("rule"), "action": line.get("action")}
    if line.get("error"):
        node["error"] = line["error"]
    if line.get("skipped"):
        node["skipped"] = line["skipped"]
    first = line.get("activationId")
    if not first:
        return node
    attempts = []
    for number in range(1, MAX_ATTEMPTS + 1):
        aid = attempt_activation_id(first, number)
        found = fetch(aid)
        if found is None:
            if number == 1:
                attempts.append(pending(aid, "run"))
            break
        attempts.append(run_node(found, "run" if number == 1 else "retry", fetch))
    node["runs"] = attempts
    dead = letter(first)
    if dead is not None:
        node["deadLetter"] = {
            "id": dead.get("id"),
            "reason": dead.get("reason"),
            "attempts": dead.get("attempts"),
        }
    redriven = fetch(attempt_activation_id(first, REDRIVE_ATTEMPT))
    if redriven is not None:
        node["redrive"] = run_node(redriven, "redrive", fetch)
    return node


def build_trace(activation_id: str, fetch: Fetch, letter: Fetch) -> dict[str, Any]:
    """The tree of what `activation_id` caused (pure over `fetch` and `letter`, which answer None for 404)."""
    record = fetch(activation_id)
    if record is None:
        raise ClientError(f"The activation {activation_id} does not exist (or is not recorded yet).")
    root = run_node(record, "trigger" if is_trigger_record(record) else "run", fetch)
    if record.get("cause"):
        root["cause"] = record["cause"]
    if is_trigger_record(record):
        root["rules"] = [rule_run(line, fetch, letter) for line in rule_lines(record)]
    return root


def label(node: dict[str, Any]) -> Text:
    status = str(node.get("status", ""))
    text = Text()
    if node.get("role") == "rule":
        text.append(f"rule {node.get('rule')} → {node.get('action')}", style="bold")
        for key in ("skipped", "error"):
            if node.get(key):
                text.append(f"  {key}: {node[key]}", style="yellow")
        return text
    role = node.get("role", "")
    if node.get("attempt"):
        role = f"{role} (attempt {node['attempt']})"
    text.append(f"{role} ", style="bold")
    text.append(f"{node.get('name', '')} ")
    text.append(str(node.get("activationId", "")), style="dim")
    text.append(f"  {status}", style=STATUS_STYLES.get(status, "dim"))
    if node.get("duration") is not None:
        text.append(f"  {node['duration']}ms")
    if node.get("error"):
        text.append(f"  {node['error']}", style=STATUS_STYLES.get(status, ""))
    return text


def render(node: dict[str, Any], tree: Tree | None = None) -> Tree:
    branch = Tree(label(node)) if tree is None else tree.add(label(node))
    for child in node.get("rules", []) + node.get("runs", []) + node.get("components", []):
        render(child, branch)
    if node.get("deadLetter"):
        dead = node["deadLetter"]
        reason = dead.get("reason") or {}
        branch.add(
            Text(
                f"dead letter {dead.get('id')}  after {dead.get('attempts')} attempts: "
                f"{reason.get('status')}: {reason.get('error')}",
                style="red",
            )
        )
    if node.get("redrive"):
        render(node["redrive"], branch)
    return branch


@client_command(activation_group, "trace")
@click.argument("activation_id")
def activation_trace(session: Session, activation_id: str) -> None:
    """Show everything one trigger fire caused: rule runs, sequence components, retries and dead letters.

    \b
    Example:
      squall activation trace 44794bd6aab74415b4e42a308d880e5b
    """

    def fetch(aid: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = session.api.get(record_path(session, aid))
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def letter(aid: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = session.api.get(
                f"{collection_path(session.namespace, 'deadletters')}/{segment(aid)}"
            )
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    tree = build_trace(activation_id, fetch, letter)
    if session.out.json_mode:
        session.out.json(tree)
    else:
        session.out.line(render(tree))
