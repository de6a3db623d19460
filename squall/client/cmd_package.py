"""`squall package create|update|bind|get|list|delete`."""

from __future__ import annotations

from typing import Any

import click

from squall.client import args
from squall.client.api_client import ClientError
from squall.client.common import (
    annotation_options,
    describe,
    list_entities,
    list_options,
    param_options,
    show_record,
)
from squall.client.names import parse_name
from squall.client.session import Session, client_command


@click.group("package")
def package_group() -> None:
    """Work with packages."""


def shared_flag(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("yes", "true"):
        return True
    if value.lower() in ("no", "false"):
        return False
    raise ClientError(f"Invalid argument '{value}' for --shared: use yes or no.")


def _body(
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
    annotations: tuple[tuple[str, str], ...],
    annotation_files: tuple[str, ...],
    shared: str | None,
    *,
    update: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if params or param_files or not update:
        body["parameters"] = args.key_values(params, param_files)
    if annotations or annotation_files or not update:
        body["annotations"] = args.key_values(annotations, annotation_files)
    publish = shared_flag(shared)
    if publish is not None:
        body["publish"] = publish
    return body


package_flags = [
    param_options,
    annotation_options,
    click.option(
        "--shared", type=str, help="yes: every namespace may read, bind and invoke it; no: private."
    ),
]


def with_package_flags(f: Any) -> Any:
    for flag in reversed(package_flags):
        f = flag(f)
    return f


@client_command(package_group, "create")
@click.argument("name")
@with_package_flags
def package_create(session: Session, name: str, **flags: Any) -> None:
    """Create a package.

    \b
    Example:
      squall package create tools -p region eu --shared yes
    """
    qname = parse_name(name, session.namespace)
    record = session.api.put(qname.path("packages"), _body(**flags, update=False))
    session.out.ok(f"created package {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(package_group, "update")
@click.argument("name")
@with_package_flags
def package_update(session: Session, name: str, **flags: Any) -> None:
    """Update a package.

    \b
    Example:
      squall package update tools --shared no
    """
    qname = parse_name(name, session.namespace)
    record = session.api.put(qname.path("packages"), _body(**flags, update=True), overwrite=True)
    session.out.ok(f"updated package {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(package_group, "bind")
@click.argument("package")
@click.argument("name")
@param_options
@annotation_options
def package_bind(
    session: Session,
    *,
    package: str,
    name: str,
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
    annotations: tuple[tuple[str, str], ...],
    annotation_files: tuple[str, ...],
) -> None:
    """Bind PACKAGE (often another namespace's shared one) as NAME, with bound parameters.

    \b
    Example:
      squall package bind /whisk.system/utils myutils -p num 2
    """
    source = parse_name(package, session.namespace)
    if source.package:
        raise ClientError(f"'{package}' is not a package name.")
    qname = parse_name(name, session.namespace)
    body = {
        "binding": {"namespace": source.namespace, "name": source.name},
        "parameters": args.key_values(params, param_files),
        "annotations": args.key_values(annotations, annotation_files),
    }
    record = session.api.put(qname.path("packages"), body)
    session.out.ok(f"created binding {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(package_group, "get")
@click.argument("name")
@click.argument("field", required=False)
@click.option("-s", "--summary", is_flag=True, help="A summary: the package and its actions.")
def package_get(session: Session, name: str, field: str | None, summary: bool) -> None:
    """Get a package (with --summary, its actions too).

    \b
    Examples:
      squall package get /whisk.system/utils --summary
      squall package get tools parameters
    """
    record = session.api.get(parse_name(name, session.namespace).path("packages"))
    if summary and not session.out.json_mode:
        for line in describe("package", record):
            session.out.line(line)
        for action in record.get("actions") or []:
            item = {"namespace": f"{record.get('namespace')}/{record.get('name')}"} | action
            for line in describe("action", item, indent=" "):
                session.out.line(line)
        return
    show_record(session, "package", name, record, field=field, summary=summary)


@client_command(package_group, "list")
@click.argument("namespace", required=False)
@list_options
def package_list(
    session: Session, namespace: str | None, skip: int | None, limit: int | None, name_sort: bool
) -> None:
    """List packages.

    \b
    Examples:
      squall package list
      squall package list /whisk.system
    """
    list_entities(session, "packages", namespace, skip=skip, limit=limit, name_sort=name_sort)


@client_command(package_group, "delete")
@click.argument("name")
def package_delete(session: Session, name: str) -> None:
    """Delete a package (it must hold no actions).

    \b
    Example:
      squall package delete tools
    """
    record = session.api.delete(parse_name(name, session.namespace).path("packages"))
    session.out.ok(f"deleted package {name}")
    if session.out.json_mode:
        session.out.json(record)
