"""Pieces the entity commands share: parameter and annotation flags, list tables, `--summary`, field filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from squall.client import args
from squall.client.api_client import ClientError
from squall.client.names import collection_path, namespace_arg
from squall.client.session import Session

F = TypeVar("F", bound=Callable[..., Any])


def param_options(f: F) -> F:
    """`-p KEY VALUE`, `-P FILE`: OpenWhisk parameters (values parsed as JSON when they are)."""
    f = click.option(
        "-P",
        "--param-file",
        "param_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A JSON file of parameters.",
    )(f)
    return click.option(
        "-p",
        "--param",
        "params",
        nargs=2,
        multiple=True,
        metavar="KEY VALUE",
        help="Parameter KEY with VALUE (JSON, or else a string).",
    )(f)


def annotation_options(f: F) -> F:
    f = click.option(
        "-A",
        "--annotation-file",
        "annotation_files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A JSON file of annotations.",
    )(f)
    return click.option(
        "-a",
        "--annotation",
        "annotations",
        nargs=2,
        multiple=True,
        metavar="KEY VALUE",
        help="Annotation KEY with VALUE (JSON, or else a string).",
    )(f)


def list_options(f: F) -> F:
    f = click.option("-s", "--skip", type=int, default=None, help="Skip this many entities.")(f)
    f = click.option("-l", "--limit", type=int, default=None, help="At most this many (30; up to 200).")(f)
    return click.option("-n", "--name-sort", is_flag=True, help="Sort by name.")(f)


def visibility(record: dict[str, Any]) -> str:
    return "shared" if record.get("publish") else "private"


def full_name(record: dict[str, Any]) -> str:
    return f"/{record.get('namespace', '')}/{record.get('name', '')}"


def list_entities(
    session: Session,
    collection: str,
    namespace: str | None,
    *,
    skip: int | None,
    limit: int | None,
    name_sort: bool,
    kind_column: Callable[[dict[str, Any]], str] | None = None,
    path: str | None = None,
) -> None:
    ns = namespace_arg(namespace, session.namespace)
    found = session.api.get(path or collection_path(ns, collection), skip=skip, limit=limit)
    items = list(found or [])
    if name_sort:
        items.sort(key=full_name)
    if session.out.json_mode:
        session.out.json(items)
        return
    rows = [
        [full_name(item), visibility(item), *([kind_column(item)] if kind_column else [])] for item in items
    ]
    session.out.table(collection, ["name", "visibility", *(["kind"] if kind_column else [])], rows)


def describe(kind: str, record: dict[str, Any], indent: str = "") -> list[str]:
    """wsk's `--summary`: the full name and description, then the parameters (bound ones starred)."""
    description = args.annotation(record, "description")
    head = f"{indent}{kind} {full_name(record)}"
    lines = [f"{head}: {description}" if description else head]
    declared = args.annotation(record, "parameters") or []
    names = [p.get("name") for p in declared if isinstance(p, dict) and p.get("name")]
    bound = [kv.get("key") for kv in record.get("parameters") or [] if kv.get("key") != "_actions"]
    shown = [f"*{n}" for n in bound] + [n for n in names if n not in bound]
    lines.append(f"{indent}   (parameters: {', '.join(map(str, shown)) if shown else 'none defined'})")
    return lines


def show_record(
    session: Session, kind: str, name: str, record: Any, *, field: str | None, summary: bool
) -> None:
    out = session.out
    if summary and not out.json_mode:
        for line in describe(kind, record):
            out.line(line)
        return
    if field:
        if not isinstance(record, dict) or field not in record:
            raise ClientError(f"Invalid field filter '{field}'.")
        out.record(record[field], f"got {kind} {name}, displaying field {field}")
        return
    out.record(record, f"got {kind} {name}")
