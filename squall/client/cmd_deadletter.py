"""`squall deadletter list|get|redrive|delete` and `squall feed list`: Squall's dead letters and feed health."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from squall.client.api_client import ClientError, segment
from squall.client.names import collection_path
from squall.client.output import status_text, when
from squall.client.session import Session, client_command


@click.group("deadletter")
def deadletter_group() -> None:
    """Work with dead letters: rule-fired runs that failed for good (after their retries)."""


def letters_path(session: Session) -> str:
    return collection_path(session.namespace, "deadletters")


@client_command(deadletter_group, "list")
@click.option("-s", "--skip", type=int, help="Skip this many letters.")
@click.option("-l", "--limit", type=int, help="At most this many (30; up to 200).")
def deadletter_list(session: Session, skip: int | None, limit: int | None) -> None:
    """List dead letters, newest first.

    \b
    Example:
      squall deadletter list
    """
    letters = list(session.api.get(letters_path(session), skip=skip, limit=limit) or [])
    if session.out.json_mode:
        session.out.json(letters)
        return
    rows: list[list[str | Text]] = []
    for letter in letters:
        reason = letter.get("reason") or {}
        rows.append(
            [
                when(letter.get("lastFailed")),
                str(letter.get("id", "")),
                str(letter.get("action", "")),
                str(letter.get("rule") or ""),
                str(letter.get("attempts", "")),
                status_text(str(reason.get("status", ""))),
                Text(str(reason.get("error", ""))[:80]),
            ]
        )
    session.out.table("dead letters", ["Failed", "ID", "Action", "Rule", "Attempts", "Status", "Error"], rows)


@client_command(deadletter_group, "get")
@click.argument("letter_id")
def deadletter_get(session: Session, letter_id: str) -> None:
    """Get a dead letter (with the invocation a redrive runs again).

    \b
    Example:
      squall deadletter get 44794bd6aab74415b4e42a308d880e5b
    """
    session.out.record(
        session.api.get(f"{letters_path(session)}/{segment(letter_id)}"), f"got dead letter {letter_id}"
    )


@client_command(deadletter_group, "redrive")
@click.argument("letter_id")
def deadletter_redrive(session: Session, letter_id: str) -> None:
    """Run a dead letter's invocation again (the letter is removed); prints the new activation id.

    \b
    Example:
      squall deadletter redrive 44794bd6aab74415b4e42a308d880e5b
    """
    answer = session.api.post(f"{letters_path(session)}/{segment(letter_id)}/redrive")
    if session.out.json_mode:
        session.out.json(answer)
    else:
        session.out.ok(f"redrove dead letter {letter_id} as activation {answer.get('activationId')}")


@client_command(deadletter_group, "delete")
@click.argument("letter_id", required=False)
@click.option("--all", "purge", is_flag=True, help="Delete every dead letter of the namespace.")
def deadletter_delete(session: Session, letter_id: str | None, purge: bool) -> None:
    """Delete a dead letter, or all of them (--all).

    \b
    Examples:
      squall deadletter delete 44794bd6aab74415b4e42a308d880e5b
      squall deadletter delete --all
    """
    if purge == bool(letter_id):
        raise ClientError("Give a dead letter's id, or --all.")
    if purge:
        answer: Any = session.api.delete(letters_path(session))
        message = f"deleted {answer.get('purged', 0)} dead letters"
    else:
        answer = session.api.delete(f"{letters_path(session)}/{segment(letter_id or '')}")
        message = f"deleted dead letter {letter_id}"
    if session.out.json_mode:
        session.out.json(answer)
    else:
        session.out.ok(message)


@click.group("feed")
def feed_group() -> None:
    """Work with feeds (alarms, webhooks, NATS subjects) and their health."""


def health_text(status: dict[str, Any]) -> Text:
    if status.get("active"):
        return Text("active", style="green")
    reason = status.get("reason") or {}
    return Text(f"inactive ({reason.get('kind', '')}: {reason.get('message', '')})", style="red")


@client_command(feed_group, "list")
def feed_list(session: Session) -> None:
    """List every feed of the namespace with its health: active or why not, fires, last error.

    \b
    Example:
      squall feed list
    """
    feeds = list(session.api.get(collection_path(session.namespace, "feeds")) or [])
    if session.out.json_mode:
        session.out.json(feeds)
        return
    rows: list[list[str | Text]] = []
    for feed in feeds:
        status = feed.get("status") or {}
        rows.append(
            [
                str(feed.get("trigger", "")),
                str(feed.get("feed", "")),
                health_text(status),
                str(status.get("fireCount", 0)),
                when(status.get("lastFire")),
                when(status.get("nextFire")),
                Text(str(status.get("lastError") or ""), style="yellow"),
            ]
        )
    session.out.table(
        "feeds", ["Trigger", "Feed", "Health", "Fires", "Last fire", "Next fire", "Last error"], rows
    )
