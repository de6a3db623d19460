"""What the client commands print: `ok:` lines, aligned tables (rich), pretty JSON, or JSON alone (`--json`)."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from rich.console import Console, RenderableType
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
        # Written as it is: JSON has no markup to render, and rich would measure every line of it.
        self.out.file.write(pretty(value) + "\n")
        self.out.file.flush()

    def json_line(self, value: Any) -> None:
        """One record on one line (`tail --json`, `poll --json`): a stream a script reads line by line."""
        self.out.file.write(json.dumps(value, ensure_ascii=False) + "\n")
        self.out.file.flush()

    def line(self, text: RenderableType = "") -> None:
        self.out.print(text)

    def warn(self, message: str) -> None:
        self.err.print(Text.assemble(("warning:", "yellow"), f" {message}"))

    def error(self, message: str) -> None:
        self.err.print(Text.assemble(("error:", "bold red"), f" {message}"))

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str | Text]]) -> None:
        """Aligned columns, as wsk prints lists. Built by hand: rich's Table measures every cell and takes
        ~350 ms for 200 rows, which is most of what `activation list` would cost."""
        cells = [[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row] for row in rows]
        widths = [len(c) for c in columns]
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], cell.cell_len)
        lines = Text()
        if title:
            lines.append(f"{title}\n", style="bold")
        header = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
        lines.append(f"{header}\n", style="bold")
        for row in cells:
            line = Text()
            for i, cell in enumerate(row):
                if i:
                    line.append("  ")
                line.append_text(cell)
                if i < len(row) - 1:
                    line.append(" " * (widths[i] - cell.cell_len))
            line.rstrip()
            lines.append_text(line)
            lines.append("\n")
        lines.rstrip()
        self.out.print(lines)

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
