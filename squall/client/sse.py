"""Server-Sent Events read line by line (pure): `id`, `event`, `data` fields, comments ignored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: str
    id: str | None


def events(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a stream's lines (without their line ends), as the EventSource algorithm reads them."""
    name: str = ""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(name or "message", "\n".join(data), event_id)
            name, event_id, data = "", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
