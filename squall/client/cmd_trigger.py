"""`squall trigger create|update|fire|get|list|delete`, with wsk's `--feed` lifecycle."""

from __future__ import annotations

from typing import Any

import click

from squall.client import args
from squall.client.api_client import ClientError
from squall.client.common import annotation_options, list_entities, list_options, param_options, show_record
from squall.client.feed_calls import FEED_ANNOTATION, call_feed
from squall.client.names import parse_name, qualify
from squall.client.session import Session, client_command


@click.group("trigger")
def trigger_group() -> None:
    """Work with triggers."""


@client_command(trigger_group, "create")
@click.argument("name")
@param_options
@annotation_options
@click.option("-f", "--feed", help="The feed action that fires the trigger, e.g. /whisk.system/alarms/alarm.")
def trigger_create(
    session: Session,
    *,
    name: str,
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
    annotations: tuple[tuple[str, str], ...],
    annotation_files: tuple[str, ...],
    feed: str | None,
) -> None:
    """Create a trigger; with --feed, also register it with the feed (CREATE), as wsk does.

    \b
    Examples:
      squall trigger create orders -p source shop
      squall trigger create every-minute --feed /whisk.system/alarms/alarm -p cron '* * * * *'
    """
    qname = parse_name(name, session.namespace)
    listed = args.key_values(annotations, annotation_files)
    body: dict[str, Any] = {"annotations": listed}
    if feed:
        feed = qualify(feed, session.namespace)
        # As wsk: the parameters go to the feed, not onto the trigger, which names its feed.
        body["annotations"] = args.merge_annotations(listed, {FEED_ANNOTATION: feed})
        body["parameters"] = []
    else:
        body["parameters"] = args.key_values(params, param_files)
    record = session.api.put(qname.path("triggers"), body)
    if feed:
        try:
            with session.out.spinner(f"creating feed {feed}"):
                call_feed(session, feed, "CREATE", qname, args.payload(params, param_files))
        except ClientError as exc:
            try:
                session.api.delete(qname.path("triggers"))
            except ClientError as cleanup:
                session.out.warn(f"could not delete trigger {name} after the feed failed: {cleanup.message}")
            raise ClientError(f"Unable to create trigger '{name}': {exc.message}") from None
    session.out.ok(f"invoked {feed} with the CREATE lifecycle event" if feed else f"created trigger {name}")
    if feed:
        session.out.ok(f"created trigger {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(trigger_group, "update")
@click.argument("name")
@param_options
@annotation_options
def trigger_update(
    session: Session,
    *,
    name: str,
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
    annotations: tuple[tuple[str, str], ...],
    annotation_files: tuple[str, ...],
) -> None:
    """Update a trigger; a feed's trigger sends its new parameters to the feed (UPDATE).

    \b
    Example:
      squall trigger update every-minute -p cron '*/2 * * * *'
    """
    qname = parse_name(name, session.namespace)
    try:
        current = session.api.get(qname.path("triggers"))
    except ClientError as exc:
        if exc.status != 404:
            raise
        current = {}
    feed = args.annotation(current, FEED_ANNOTATION)
    if feed and (params or param_files):
        call_feed(session, str(feed), "UPDATE", qname, args.payload(params, param_files))
        session.out.ok(f"invoked {feed} with the UPDATE lifecycle event")
    body: dict[str, Any] = {}
    if (params or param_files) and not feed:
        body["parameters"] = args.key_values(params, param_files)
    if annotations or annotation_files:
        extra = {FEED_ANNOTATION: feed} if feed else {}
        body["annotations"] = args.merge_annotations(args.key_values(annotations, annotation_files), extra)
    record = session.api.put(qname.path("triggers"), body, overwrite=True)
    session.out.ok(f"updated trigger {name}")
    if session.out.json_mode:
        session.out.json(record)


@client_command(trigger_group, "fire")
@click.argument("name")
@click.argument("payload_arg", required=False, metavar="[PAYLOAD]")
@param_options
def trigger_fire(
    session: Session,
    *,
    name: str,
    payload_arg: str | None,
    params: tuple[tuple[str, str], ...],
    param_files: tuple[str, ...],
) -> None:
    """Fire a trigger with a payload (-p pairs, -P file, or a JSON object as PAYLOAD).

    \b
    Example:
      squall trigger fire orders -p order 42
    """
    qname = parse_name(name, session.namespace)
    body = args.payload(params, param_files)
    if payload_arg is not None:
        parsed = args.parse_value(payload_arg)
        body = (parsed if isinstance(parsed, dict) else {"payload": parsed}) | body
    response = session.api.request("POST", qname.path("triggers"), json=body)
    answer: Any = response.json() if response.content else {}
    if session.out.json_mode:
        session.out.json(answer)
    elif response.status_code == 204:
        session.out.ok(f"triggered {qname.full}, which has no active rule: nothing ran")
    else:
        session.out.ok(f"triggered {qname.full} with id {answer.get('activationId', '')}")


@client_command(trigger_group, "get")
@click.argument("name")
@click.argument("field", required=False)
@click.option("-s", "--summary", is_flag=True, help="A summary: description and parameters.")
def trigger_get(session: Session, name: str, field: str | None, summary: bool) -> None:
    """Get a trigger; a feed's trigger also shows the feed's answer to READ (its configuration and health).

    \b
    Example:
      squall trigger get every-minute
    """
    qname = parse_name(name, session.namespace)
    record = session.api.get(qname.path("triggers"))
    feed = args.annotation(record, FEED_ANNOTATION)
    if not feed or field or summary:
        show_record(session, "trigger", name, record, field=field, summary=summary)
        return
    try:
        read: Any = call_feed(session, str(feed), "READ", qname)
    except ClientError as exc:
        read = {"error": exc.message}
    if session.out.json_mode:
        session.out.json(record | {"feedRead": read})
        return
    session.out.record(record, f"got trigger {name}")
    session.out.ok(f"feed {feed} answered READ:")
    session.out.json(read)


@client_command(trigger_group, "list")
@click.argument("namespace", required=False)
@list_options
def trigger_list(
    session: Session, namespace: str | None, skip: int | None, limit: int | None, name_sort: bool
) -> None:
    """List triggers.

    \b
    Example:
      squall trigger list
    """
    list_entities(session, "triggers", namespace, skip=skip, limit=limit, name_sort=name_sort)


@client_command(trigger_group, "delete")
@click.argument("name")
def trigger_delete(session: Session, name: str) -> None:
    """Delete a trigger; a feed's trigger is first unregistered from the feed (DELETE), as wsk does.

    \b
    Example:
      squall trigger delete every-minute
    """
    qname = parse_name(name, session.namespace)
    record = session.api.get(qname.path("triggers"))
    feed = args.annotation(record, FEED_ANNOTATION)
    if feed:
        try:
            call_feed(session, str(feed), "DELETE", qname)
            session.out.ok(f"invoked {feed} with the DELETE lifecycle event")
        except ClientError as exc:
            # The server deletes a trigger's feed registration with the trigger, so go on.
            session.out.warn(exc.message)
    deleted = session.api.delete(qname.path("triggers"))
    session.out.ok(f"deleted trigger {name}")
    if session.out.json_mode:
        session.out.json(deleted)
