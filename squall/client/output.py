"""What the client commands print: `ok:` lines, aligned tables (rich), pretty JSON, or JSON alone (`--json`)."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "success": "green",
    "application error": "yellow",
    "action developer error": "red",
    "whisk internal error": "bold red",
}
STATUS_BY_CODE = {
    0: "success",
    1: "application error",
    2: "action developer error",
    3: "whisk internal error",
}


def pretty(value: Any) -> str:
    return json.dumps(value, indent=4, ensure_ascii=False)


def when(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return ""
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class Output:
    """One command's output: stdout for results, stderr for errors; `json_mode` prints JSON and nothing else."""

    def __init__(self, *, json_mode: bool = False, file: Any = None, err: Any = None) -> None:
        self.json_mode = json_mode
        self.out = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
        if not self.out.is_terminal:
            # A pipe or a file gets whole lines: tables at their natural width, never folded at 80 columns.
            self.out.width = 4096
        self.err = Console(file=err or sys.stderr, highlight=False, soft_wrap=True)

    def ok(self, message: str) -> None:
        """wsk's confirmation line; suppressed in JSON mode, where the record says it."""
        if not self.json_mode:
            self.out.print(Text.assemble(("ok:", "green"), f" {message}"))

    def record(self, value: Any, heading: str | None = None) -> None:
        if heading and not self.json_mode:
            self.ok(heading)
        self.json(value)

    def json(self, value: Any) -> None:
        self.out.print(Text(pretty(value)))

    def line(self, text: RenderableType = "") -> None:
        self.out.print(text)

    def warn(self, message: str) -> None:
        self.err.print(Text.assemble(("warning:", "yellow"), f" {message}"))

    def error(self, message: str) -> None:
        self.err.print(Text.assemble(("error:", "bold red"), f" {message}"))

    def table(
        self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[RenderableType]]
    ) -> None:
        table = Table(title=title, title_justify="left", box=None, pad_edge=False, show_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=True, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self.out.print(table)

    @contextmanager
    def spinner(self, message: str) -> Iterator[None]:
        """A spinner on stderr while waiting, only when stderr is a terminal (never in scripts or pipes)."""
        status = self.err.status(message) if self.err.is_terminal and not self.json_mode else nullcontext()
        with status:
            yield


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def status_of(record: dict[str, Any]) -> str:
    response = record.get("response")
    if isinstance(response, dict) and response.get("status"):
        return str(response["status"])
    code = record.get("statusCode")
    return STATUS_BY_CODE.get(code, "") if isinstance(code, int) else ""
