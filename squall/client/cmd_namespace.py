"""`squall namespace list|get` and `squall list`: the namespaces of a key, and everything in one."""

from __future__ import annotations

from typing import Any

import click

from squall.client import args
from squall.client.common import full_name, visibility
from squall.client.names import collection_path, namespace_arg
from squall.client.session import Session, client_command

COLLECTIONS = ("packages", "actions", "triggers", "rules")


@click.group("namespace")
def namespace_group() -> None:
    """Work with namespaces."""


@client_command(namespace_group, "list")
def namespace_list(session: Session) -> None:
    """List the namespaces of the key.

    \b
    Example:
      squall namespace list
    """
    names = session.api.get("namespaces")
    if session.out.json_mode:
        session.out.json(names)
        return
    session.out.table("namespaces", ["namespace"], [[str(n)] for n in names or []])


def show_everything(session: Session, namespace: str | None) -> None:
    ns = namespace_arg(namespace, session.namespace)
    found: dict[str, list[dict[str, Any]]] = {
        collection: list(session.api.get(collection_path(ns, collection), limit=0) or [])
        for collection in COLLECTIONS
    }
    if session.out.json_mode:
        session.out.json(found)
        return
    session.out.line(f"Entities in namespace: {ns if ns != '_' else 'default'}")
    for collection, items in found.items():
        rows = []
        for item in sorted(items, key=full_name):
            kind = str(args.annotation(item, "exec") or "") if collection == "actions" else ""
            rows.append([full_name(item), visibility(item), kind])
        session.out.table(collection, ["name", "visibility", ""], rows)


@client_command(namespace_group, "get")
@click.argument("namespace", required=False)
def namespace_get(session: Session, namespace: str | None) -> None:
    """List every entity of a namespace (the key's own by default).

    \b
    Example:
      squall namespace get
    """
    show_everything(session, namespace)


def register_list(group: click.Group) -> None:
    @client_command(group, "list")
    @click.argument("namespace", required=False)
    def list_all(session: Session, namespace: str | None) -> None:
        """List every entity in a namespace: packages, actions, triggers and rules.

        \b
        Example:
          squall list
        """
        show_everything(session, namespace)
