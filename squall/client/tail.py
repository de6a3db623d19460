"""`squall activation tail`: the live activation stream (SSE), filtered, coloured by status, and resumed
after a dropped connection from the last position seen (`Last-Event-ID`), so nothing is missed or repeated."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import click
import httpx
from rich.text import Text

from squall.client import args
from squall.client.cmd_activation import activation_group, activations_path
from squall.client.output import STATUS_STYLES, status_of
from squall.client.session import Session, client_command
from squall.client.sse import Event, events

# Heartbeats come every 15 s: a read that waits longer than this has lost its server.
IDLE_READ_S: Final = 45.0
RECONNECT_DELAYS_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Cursor:
    """Where the next connection resumes: after the last position received, else since the first connect."""

    last_id: str | None = None
    since: int | None = None
    received: int = 0
    reconnects: int = 0

    def request(self, filters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The query and headers of the next connection (pure)."""
        if self.last_id is not None:
            return dict(filters), {"Last-Event-ID": self.last_id}
        if self.since is not None:
            return filters | {"since": self.since}, {}
        return dict(filters), {}

    def take(self, event: Event) -> None:
        if event.id is not None:
            self.last_id = event.id
        if event.event == "overflow":
            # The server ends a stream it could not deliver in time; resume from what it last sent.
            try:
                resume = json.loads(event.data).get("lastEventId")
            except (ValueError, AttributeError):
                resume = None
            if resume is not None:
                self.last_id = str(resume)


def tail_line(record: dict[str, Any]) -> Text:
    """One record as a line: time, status (coloured), kind, entity, id, duration, and a failure's error."""
    status = status_of(record)
    start = record.get("start") or 0
    clock = time.strftime("%H:%M:%S", time.localtime(start / 1000)) + f".{start % 1000:03d}"
    kind = args.annotation(record, "kind") or "trigger"
    path = args.annotation(record, "path") or f"{record.get('namespace')}/{record.get('name')}"
    duration = record.get("duration")
    text = Text.assemble(
        (clock, "dim"),
        " ",
        (f"{status or '?':<22}", STATUS_STYLES.get(status, "")),
        f" {kind:<14} {path}  {record.get('activationId', '')}",
        f"  {duration}ms" if duration is not None else "",
    )
    result = (record.get("response") or {}).get("result")
    if status != "success" and isinstance(result, dict) and "error" in result:
        text.append(f"  {result['error']}", style=STATUS_STYLES.get(status, ""))
    if record.get("cause"):
        text.append(f"  cause {record['cause']}", style="dim")
    return text


@dataclass
class Tail:
    session: Session
    filters: dict[str, Any]
    cursor: Cursor
    deadline: float | None = None
    count: int | None = None
    on_record: Callable[[dict[str, Any]], None] | None = None
    stopped: bool = field(default=False)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def done(self) -> bool:
        left = self.remaining()
        return (
            self.stopped
            or (left is not None and left <= 0)
            or (self.count is not None and self.cursor.received >= self.count)
        )

    def run(self) -> None:
        failures = 0
        while not self.done():
            try:
                self.connect()
                failures = 0
            except httpx.ReadTimeout:
                failures = 0  # idle past the deadline's slice or the heartbeat: reconnect where it was
            except httpx.TransportError as exc:
                if self.done():
                    break
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                failures += 1
                if failures > 1:
                    self.session.out.warn(f"stream interrupted ({type(exc).__name__}); resuming in {delay} s")
                time.sleep(delay)
            self.cursor.reconnects += 1

    def connect(self) -> None:
        params, headers = self.cursor.request(self.filters)
        left = self.remaining()
        read_s = IDLE_READ_S if left is None else max(0.05, min(IDLE_READ_S, left))
        with self.session.api.stream(
            f"{activations_path(self.session)}/stream", params=params, headers=headers, read_s=read_s
        ) as response:
            if self.cursor.since is None:
                # Started live: a reconnection before the first record resumes from this moment.
                self.cursor.since = int(time.time() * 1000)
            for event in events(response.iter_lines()):
                self.cursor.take(event)
                if event.event == "activation":
                    self.cursor.received += 1
                    self.emit(json.loads(event.data))
                if self.done():
                    return

    def emit(self, record: dict[str, Any]) -> None:
        if self.on_record is not None:
            self.on_record(record)
        elif self.session.out.json_mode:
            self.session.out.json_line(record)
        else:
            self.session.out.line(tail_line(record))


@client_command(activation_group, "tail")
@click.option("--name", help="Only records of this action or trigger (name or package/name).")
@click.option("--status", help="success, failed (anything else), or one status such as 'application error'.")
@click.option(
    "--kind", type=click.Choice(["action", "trigger"]), help="Only action, or only trigger records."
)
@click.option("--cause", help="Everything one trigger fire caused (its activation id).")
@click.option("--since", type=int, help="Start with the records started at or after this epoch ms.")
@click.option("-e", "--exit", "exit_after", type=float, help="Stop after this many seconds.")
@click.option("-n", "--count", type=int, help="Stop after this many records.")
def activation_tail(
    session: Session,
    *,
    name: str | None,
    status: str | None,
    kind: str | None,
    cause: str | None,
    since: int | None,
    exit_after: float | None,
    count: int | None,
) -> None:
    """Follow activations live as they complete (Server-Sent Events), resuming without gaps after a drop.

    \b
    Examples:
      squall activation tail
      squall activation tail --status failed --kind action
      squall activation tail --cause 44794bd6aab74415b4e42a308d880e5b --exit 60
    """
    filters = {"name": name, "status": status, "kind": kind, "cause": cause}
    cursor = Cursor(since=since)
    deadline = time.monotonic() + exit_after if exit_after else None
    tail = Tail(session, {k: v for k, v in filters.items() if v}, cursor, deadline=deadline, count=count)
    if not session.out.json_mode and session.out.err.is_terminal:
        session.out.err.print("Tailing activations; Ctrl-C to stop.", style="dim")
    try:
        tail.run()
    except KeyboardInterrupt:
        return
