"""`squall rule create|update|enable|disable|status|get|list|delete`."""

from __future__ import annotations

from typing import Any

import click

from squall.client.api_client import ClientError
from squall.client.common import list_entities, list_options, show_record
from squall.client.names import parse_name, qualify
from squall.client.session import Session, client_command


@click.group("rule")
def rule_group() -> None:
    """Work with rules."""


def _put(session: Session, name: str, trigger: str, action: str, overwrite: bool) -> Any:
    qname = parse_name(name, session.namespace)
    body = {"trigger": qualify(trigger, session.namespace), "action": qualify(action, session.namespace)}
    return session.api.put(qname.path("rules"), body, overwrite=overwrite or None)


@client_command(rule_group, "create")
@click.argument("name")
@click.argument("trigger")
@click.argument("action")
def rule_create(session: Session, name: str, trigger: str, action: str) -> None:
    """Create a rule: each fire of TRIGGER runs ACTION (the rule starts active).

    \b
    Example:
      squall rule create greet-on-order orders hello
    """
    record = _put(session, name, trigger, action, overwrite=False)
    session.out.ok(f"created rule {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(rule_group, "update")
@click.argument("name")
@click.argument("trigger")
@click.argument("action")
def rule_update(session: Session, name: str, trigger: str, action: str) -> None:
    """Update a rule's trigger and action.

    \b
    Example:
      squall rule update greet-on-order orders /whisk.system/utils/echo
    """
    record = _put(session, name, trigger, action, overwrite=True)
    session.out.ok(f"updated rule {name}")
    if session.out.json_mode:
        session.out.json(record)


def _set_status(session: Session, name: str, status: str) -> None:
    qname = parse_name(name, session.namespace)
    session.api.post(qname.path("rules"), {"status": status})


@client_command(rule_group, "enable")
@click.argument("name")
def rule_enable(session: Session, name: str) -> None:
    """Enable a rule.

    \b
    Example:
      squall rule enable greet-on-order
    """
    _set_status(session, name, "active")
    session.out.ok(f"enabled rule {name}")
    if session.out.json_mode:
        session.out.json({"name": name, "status": "active"})


@client_command(rule_group, "disable")
@click.argument("name")
def rule_disable(session: Session, name: str) -> None:
    """Disable a rule.

    \b
    Example:
      squall rule disable greet-on-order
    """
    _set_status(session, name, "inactive")
    session.out.ok(f"disabled rule {name}")
    if session.out.json_mode:
        session.out.json({"name": name, "status": "inactive"})


@client_command(rule_group, "status")
@click.argument("name")
def rule_status(session: Session, name: str) -> None:
    """Show whether a rule is active.

    \b
    Example:
      squall rule status greet-on-order
    """
    record = session.api.get(parse_name(name, session.namespace).path("rules"))
    status = record.get("status", "unknown")
    if session.out.json_mode:
        session.out.json({"name": name, "status": status})
    else:
        session.out.ok(f"rule {name} is {status}")


@client_command(rule_group, "get")
@click.argument("name")
@click.argument("field", required=False)
@click.option("-s", "--summary", is_flag=True, help="A summary: description and parameters.")
def rule_get(session: Session, name: str, field: str | None, summary: bool) -> None:
    """Get a rule.

    \b
    Example:
      squall rule get greet-on-order
    """
    record = session.api.get(parse_name(name, session.namespace).path("rules"))
    show_record(session, "rule", name, record, field=field, summary=summary)


@client_command(rule_group, "list")
@click.argument("namespace", required=False)
@list_options
def rule_list(
    session: Session, namespace: str | None, skip: int | None, limit: int | None, name_sort: bool
) -> None:
    """List rules.

    \b
    Example:
      squall rule list
    """
    list_entities(session, "rules", namespace, skip=skip, limit=limit, name_sort=name_sort)


@client_command(rule_group, "delete")
@click.argument("name")
@click.option("--disable", is_flag=True, help="Disable the rule first.")
def rule_delete(session: Session, name: str, disable: bool) -> None:
    """Delete a rule.

    \b
    Example:
      squall rule delete greet-on-order
    """
    qname = parse_name(name, session.namespace)
    if disable:
        try:
            _set_status(session, name, "inactive")
        except ClientError as exc:
            session.out.warn(exc.message)
    record = session.api.delete(qname.path("rules"))
    session.out.ok(f"deleted rule {name}")
    if session.out.json_mode:
        session.out.json(record)
