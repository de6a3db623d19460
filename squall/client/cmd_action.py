"""`squall action create|update|invoke|get|list|delete`, with wsk's flags."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from api.web_request import web_url
from squall.client import args
from squall.client.api_client import ClientError
from squall.client.common import annotation_options, list_entities, list_options, param_options, show_record
from squall.client.names import collection_path, namespace_arg, parse_name, qualify
from squall.client.session import Session, client_command

EXTENSION_BY_FAMILY = {"nodejs": ".js", "python": ".py"}


@click.group("action")
def action_group() -> None:
    """Work with actions."""


def action_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--kind", help="The runtime, e.g. python:default, nodejs:18 (else from the file)."),
            click.option("--main", help="The name of the function to run (main)."),
            click.option(
                "--sequence", is_flag=True, help="ACTION_FILE is a comma-separated list of actions."
            ),
            click.option("-t", "--timeout", type=int, help="Timeout in milliseconds (60000)."),
            click.option("-m", "--memory", type=int, help="Memory in MB (256)."),
            click.option("-l", "--logsize", type=int, help="Log size limit in MB (10)."),
            click.option("-c", "--concurrency", type=int, help="Activations one container runs at once (1)."),
            click.option("--web", type=str, help="Treat as a web action: true, false or raw."),
            click.option(
                "--web-secure", type=str, help="Require the X-Require-Whisk-Auth secret (true generates one)."
            ),
        ]
    ):
        f = option(f)
    return annotation_options(param_options(f))


def build_action(
    session: Session,
    source: str | None,
    *,
    update: bool,
    kind: str | None,
    main: str | None,
    sequence: bool,
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
    annotations: tuple[tuple[str, str], ...],
    annotation_files: tuple[str, ...],
    timeout: int | None,
    memory: int | None,
    logsize: int | None,
    concurrency: int | None,
    web: str | None,
    web_secure: str | None,
) -> dict[str, Any]:
    """The PUT body: on update only what the flags give, so the rest stays as it is (OpenWhisk merges)."""
    body: dict[str, Any] = {}
    if sequence:
        if not source:
            raise ClientError("A sequence needs its actions: --sequence a,b,c.")
        body["exec"] = args.sequence_exec(source, lambda n: qualify(n, session.namespace))
    elif source:
        body["exec"] = args.code_exec(source, kind, main)
    elif not update:
        raise ClientError("An action needs code: give ACTION_FILE, or --sequence a,b,c.")
    if params or param_files or not update:
        body["parameters"] = args.key_values(params, param_files)
    extra = args.web_annotations(web, web_secure)
    if annotations or annotation_files or extra or not update:
        body["annotations"] = args.merge_annotations(args.key_values(annotations, annotation_files), extra)
    found = args.limits(timeout, memory, logsize, concurrency)
    if found:
        body["limits"] = found
    return body


@client_command(action_group, "create")
@click.argument("name")
@click.argument("source", required=False, metavar="ACTION_FILE")
@action_options
def action_create(session: Session, name: str, source: str | None, **flags: Any) -> None:
    """Create an action from a .py, .js or .zip file (kind inferred), or a sequence.

    \b
    Examples:
      squall action create hello hello.py -p name World
      squall action create page page.js --web true
      squall action create pipeline --sequence /whisk.system/utils/split,/whisk.system/utils/sort
    """
    qname = parse_name(name, session.namespace)
    body = build_action(session, source, update=False, **flags)
    session.api.put(qname.path("actions"), body)
    session.out.ok(f"created action {name}")
    if session.out.json_mode:
        session.out.json(session.api.get(qname.path("actions"), code=False))


@client_command(action_group, "update")
@click.argument("name")
@click.argument("source", required=False, metavar="ACTION_FILE")
@action_options
def action_update(session: Session, name: str, source: str | None, **flags: Any) -> None:
    """Update an action (or create it): only what the flags give changes.

    \b
    Example:
      squall action update hello -p name Squall --memory 128
    """
    qname = parse_name(name, session.namespace)
    body = build_action(session, source, update=True, **flags)
    record = session.api.put(qname.path("actions"), body, overwrite=True)
    session.out.ok(f"updated action {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(action_group, "invoke")
@click.argument("name")
@param_options
@click.option("-b", "--blocking", is_flag=True, help="Wait for the result.")
@click.option("-r", "--result", is_flag=True, help="Wait, and print the result only (implies --blocking).")
def action_invoke(
    session: Session,
    *,
    name: str,
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
    blocking: bool,
    result: bool,
) -> None:
    """Invoke an action.

    \b
    Examples:
      squall action invoke hello -p name World -r
      squall action invoke /whisk.system/utils/sort -p lines '["b","a"]' --blocking
    """
    qname = parse_name(name, session.namespace)
    blocking = blocking or result
    body = args.payload(params, param_files)
    with session.out.spinner(f"invoking {name}"):
        response = session.api.request(
            "POST",
            qname.path("actions"),
            params={"blocking": blocking, "result": result},
            json=body,
            ok=(502,),
        )
    answer: Any = response.json() if response.content else None
    failed = response.status_code == 502
    out = session.out
    if response.status_code == 202 or not blocking:
        activation_id = (answer or {}).get("activationId", "")
        if out.json_mode:
            out.json(answer)
        else:
            out.ok(f"invoked {qname.full} with id {activation_id}")
        return
    if result:
        out.json(answer)
    else:
        out.ok(f"invoked {qname.full} with id {(answer or {}).get('activationId', '')}")
        out.json(answer)
    if failed:
        raise ClientError(f"Unable to invoke action '{name}': the action failed.")


@client_command(action_group, "get")
@click.argument("name")
@click.argument("field", required=False)
@click.option("-s", "--summary", is_flag=True, help="A summary: description and parameters.")
@click.option("-r", "--url", "show_url", is_flag=True, help="The action's URL (its web URL when exported).")
@click.option("--save", is_flag=True, help="Save the action's code to NAME.ext in this directory.")
@click.option("--save-as", type=click.Path(dir_okay=False), help="Save the action's code to this file.")
def action_get(
    session: Session,
    *,
    name: str,
    field: str | None,
    summary: bool,
    show_url: bool,
    save: bool,
    save_as: str | None,
) -> None:
    """Get an action, one field of it (FIELD; `url` gives its URL), its summary, or save its code.

    \b
    Examples:
      squall action get hello
      squall action get hello url
      squall action get hello --save
    """
    qname = parse_name(name, session.namespace)
    record = session.api.get(qname.path("actions"))
    if show_url or field == "url":
        url = action_url(session, qname.namespace, qname.package, qname.name, record)
        if session.out.json_mode:
            session.out.json({"url": url})
        else:
            session.out.ok(f"got action {name}")
            session.out.line(url)
        return
    if save or save_as:
        target = Path(save_as) if save_as else Path(f"{qname.name}{code_extension(record)}")
        write_code(record, target)
        session.out.ok(f"saved action code to {target.resolve()}")
        return
    show_record(session, "action", name, record, field=field, summary=summary)


def action_url(
    session: Session, namespace: str, package: str | None, name: str, record: dict[str, Any]
) -> str:
    """A web action's public URL; any other action's invoke URL (as wsk prints them)."""
    host = session.api.config.apihost or ""
    ns = record.get("namespace", namespace).split("/")[0]
    if args.annotation(record, args.WEB_EXPORT) is True:
        return web_url(host, ns, name, package)
    return f"{session.api.base}/{qualified_path(ns, package, name)}"


def qualified_path(namespace: str, package: str | None, name: str) -> str:
    parts = [package, name] if package else [name]
    return f"namespaces/{namespace}/actions/{'/'.join(parts)}"


def code_extension(record: dict[str, Any]) -> str:
    exec_ = record.get("exec") or {}
    if exec_.get("binary"):
        return ".zip"
    family = str(exec_.get("kind", "")).split(":")[0]
    return EXTENSION_BY_FAMILY.get(family, ".txt")


def write_code(record: dict[str, Any], target: Path) -> None:
    exec_ = record.get("exec") or {}
    code = exec_.get("code")
    if not isinstance(code, str):
        raise ClientError(f"The action has no code to save (kind {exec_.get('kind')}).")
    if target.exists():
        raise ClientError(f"The file '{target}' already exists.")
    target.write_bytes(base64.b64decode(code) if exec_.get("binary") else code.encode())


@client_command(action_group, "list")
@click.argument("namespace", required=False, metavar="[NAMESPACE | PACKAGE]")
@list_options
def action_list(
    session: Session, namespace: str | None, skip: int | None, limit: int | None, name_sort: bool
) -> None:
    """List the actions of a namespace (the default package) or of a package.

    \b
    Examples:
      squall action list
      squall action list /whisk.system/utils
    """
    path = None
    if (namespace and namespace.strip("/").count("/") == 1) or (namespace and not namespace.startswith("/")):
        # `pkg` or `/ns/pkg`: a package's actions (`…/actions/pkg/`)
        qname = parse_name(namespace, session.namespace)
        package = qname.name if not qname.package else f"{qname.package}/{qname.name}"
        path = f"{collection_path(qname.namespace, 'actions')}/{package}/"
        namespace = qname.namespace
    list_entities(
        session,
        "actions",
        namespace_arg(namespace, session.namespace),
        skip=skip,
        limit=limit,
        name_sort=name_sort,
        kind_column=lambda item: str(
            (item.get("exec") or {}).get("kind") or args.annotation(item, "exec") or ""
        ),
        path=path,
    )


@client_command(action_group, "delete")
@click.argument("name")
def action_delete(session: Session, name: str) -> None:
    """Delete an action.

    \b
    Example:
      squall action delete hello
    """
    qname = parse_name(name, session.namespace)
    record = session.api.delete(qname.path("actions"))
    session.out.ok(f"deleted action {name}")
    if session.out.json_mode:
        session.out.json(record)
