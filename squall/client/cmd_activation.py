"""`squall activation list|get|logs|result|poll` with wsk's flags (`--last`, `--summary`, `--since`, …)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.text import Text

from squall.client import args
from squall.client.api_client import ClientError, segment
from squall.client.names import collection_path
from squall.client.output import status_of, status_text, when
from squall.client.session import Session, client_command

POLL_INTERVAL_S = 2.0  # wsk's


@click.group("activation")
def activation_group() -> None:
    """Work with activations: read them, poll them, tail them live, trace a fire."""


def activations_path(session: Session) -> str:
    return collection_path(session.namespace, "activations")


def record_path(session: Session, activation_id: str) -> str:
    return f"{activations_path(session)}/{segment(activation_id)}"


def activation_row(item: dict[str, Any]) -> list[str | Text]:
    """wsk's columns: Datetime, Activation ID, Kind, Start, Duration, Status, Entity."""
    kind = args.annotation(item, "kind") or ("trigger" if not item.get("end") else "")
    start = "" if kind == "trigger" else ("cold" if args.annotation(item, "initTime") is not None else "warm")
    duration = item.get("duration")
    path = args.annotation(item, "path") or f"{item.get('namespace')}/{item.get('name')}"
    return [
        when(item.get("start")),
        str(item.get("activationId", "")),
        str(kind),
        start,
        "" if duration is None else f"{duration}ms",
        status_text(status_of(item)),
        f"{path}:{item.get('version', '')}",
    ]


COLUMNS = ["Datetime", "Activation ID", "Kind", "Start", "Duration", "Status", "Entity"]


@client_command(activation_group, "list")
@click.argument("name", required=False)
@click.option("-s", "--skip", type=int, help="Skip this many activations.")
@click.option("-l", "--limit", type=int, help="At most this many (30; up to 200).")
@click.option("-f", "--full", is_flag=True, help="Full records (with results and logs).")
@click.option("--since", type=int, help="Only activations started at or after this epoch ms.")
@click.option("--upto", type=int, help="Only activations started at or before this epoch ms.")
def activation_list(
    session: Session,
    *,
    name: str | None,
    skip: int | None,
    limit: int | None,
    full: bool,
    since: int | None,
    upto: int | None,
) -> None:
    """List activations, newest first (optionally of one action or trigger NAME).

    \b
    Examples:
      squall activation list
      squall activation list hello --limit 5
    """
    found = session.api.get(
        activations_path(session),
        name=name,
        skip=skip,
        limit=limit,
        docs=full or None,
        since=since,
        upto=upto,
    )
    items = list(found or [])
    if session.out.json_mode or full:
        session.out.json(items)
        return
    session.out.table(None, COLUMNS, [activation_row(item) for item in items])


def last_activation_id(session: Session, name: str | None = None) -> str:
    found = session.api.get(activations_path(session), limit=1, name=name)
    if not found:
        raise ClientError("There are no activations yet.")
    return str(found[0]["activationId"])


def id_or_last(session: Session, activation_id: str | None, last: bool) -> str:
    if last:
        return last_activation_id(session)
    if not activation_id:
        raise ClientError("An activation id is required (or --last).")
    return activation_id


last_option = click.option("-l", "--last", is_flag=True, help="The most recent activation.")


@client_command(activation_group, "get")
@click.argument("activation_id", required=False)
@click.argument("field", required=False)
@last_option
@click.option("-s", "--summary", is_flag=True, help="A summary: the result and status.")
def activation_get(
    session: Session, activation_id: str | None, field: str | None, last: bool, summary: bool
) -> None:
    """Get an activation record (or one FIELD of it).

    \b
    Examples:
      squall activation get 44794bd6aab74415b4e42a308d880e5b
      squall activation get --last response
    """
    if last and activation_id and field is None:
        field, activation_id = activation_id, None
    aid = id_or_last(session, activation_id, last)
    record = session.api.get(record_path(session, aid))
    out = session.out
    if summary and not out.json_mode:
        response = record.get("response") or {}
        out.line(
            f"activation result for '/{record.get('namespace')}/{record.get('name')}' ({status_of(record)} at {when(record.get('start'))})"
        )
        out.json(response.get("result"))
        return
    if field:
        if field not in record:
            raise ClientError(f"Invalid field filter '{field}'.")
        out.record(record[field], f"got activation {aid}, displaying field {field}")
        return
    out.record(record, f"got activation {aid}")


def strip_line(line: str) -> str:
    """`2024-01-01T00:00:00.000Z stdout: text` → `text` (wsk's --strip)."""
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1].rstrip(":") in ("stdout", "stderr"):
        return parts[2]
    return line


@client_command(activation_group, "logs")
@click.argument("activation_id", required=False)
@last_option
@click.option("-r", "--strip", is_flag=True, help="Only the text of each line (no time, no stream).")
def activation_logs(session: Session, activation_id: str | None, last: bool, strip: bool) -> None:
    """Get an activation's logs.

    \b
    Example:
      squall activation logs --last --strip
    """
    aid = id_or_last(session, activation_id, last)
    logs = (session.api.get(f"{record_path(session, aid)}/logs") or {}).get("logs", [])
    if session.out.json_mode:
        session.out.json(logs)
        return
    for line in logs:
        session.out.line(Text(strip_line(line) if strip else line))


@client_command(activation_group, "result")
@click.argument("activation_id", required=False)
@last_option
def activation_result(session: Session, activation_id: str | None, last: bool) -> None:
    """Get an activation's result.

    \b
    Example:
      squall activation result --last
    """
    aid = id_or_last(session, activation_id, last)
    response = session.api.get(f"{record_path(session, aid)}/result") or {}
    session.out.json(response.get("result"))


@client_command(activation_group, "poll")
@click.argument("name", required=False)
@click.option("-e", "--exit", "exit_after", type=int, default=0, help="Stop after this many seconds.")
@click.option("--since-seconds", type=int, default=0, help="Start this many seconds ago.")
@click.option("--since-minutes", type=int, default=0, help="Start this many minutes ago.")
@click.option("--since-hours", type=int, default=0, help="Start this many hours ago.")
@click.option("--since-days", type=int, default=0, help="Start this many days ago.")
def activation_poll(
    session: Session,
    *,
    name: str | None,
    exit_after: int,
    since_seconds: int,
    since_minutes: int,
    since_hours: int,
    since_days: int,
) -> None:
    """Poll for activations and print their logs, as wsk does (a list every 2 s); `activation tail` streams.

    \b
    Examples:
      squall activation poll --exit 30
      squall activation poll hello --since-minutes 5
    """
    back_s = since_seconds + 60 * since_minutes + 3600 * since_hours + 86400 * since_days
    since = int(time.time() * 1000) - back_s * 1000
    deadline = time.monotonic() + exit_after if exit_after else None
    seen: set[str] = set()
    out = session.out
    if not out.json_mode:
        out.line("Enter Ctrl-c to exit.")
        out.line(f"Polling for activation logs{f' of {name}' if name else ''}")
    try:
        while deadline is None or time.monotonic() < deadline:
            found = session.api.get(activations_path(session), name=name, since=since, docs=True, limit=200)
            for record in reversed(found or []):
                aid = record["activationId"]
                if aid in seen:
                    continue
                seen.add(aid)
                since = max(since, int(record.get("start", 0)))
                print_polled(session, record)
            pause = (
                POLL_INTERVAL_S
                if deadline is None
                else min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic()))
            )
            time.sleep(pause)
    except KeyboardInterrupt:
        return
    if not out.json_mode:
        out.line(f"Poll terminated after {exit_after} seconds.")


def print_polled(session: Session, record: dict[str, Any]) -> None:
    out = session.out
    if out.json_mode:
        out.json_line(record)
        return
    out.line()
    out.line(Text(f"Activation: '{record.get('name')}' ({record.get('activationId')})"))
    out.json(record.get("logs") or [])
