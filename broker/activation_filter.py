"""Which activation records a live stream sends: its filters, and where in the stream it starts."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from broker import subjects
from broker.activations import SUCCESS, Activation, annotation, entity_path

Kind = Literal["action", "trigger"]
KINDS: Final = ("action", "trigger")
# `status=failed` is every status but success; any other value is one status string.
FAILED: Final = "failed"


class ActivationFilter(msgspec.Struct, frozen=True, kw_only=True):
    """A stream's query filters; None lets every record through.

    `name` is compared with the record's `pkg/name` (broker.activations.entity_path), as the list filter is;
    `cause` lets through a trigger fire's own record and every record it caused; `since` drops records that
    started before it (epoch ms).
    """

    name: str | None = None
    status: str | None = None
    kind: Kind | None = None
    cause: str | None = None
    since: int | None = None

    @property
    def empty(self) -> bool:
        """Whether every record passes: the stream may then send the stored bytes without decoding them."""
        return self == NO_FILTER


NO_FILTER: Final = ActivationFilter()


def kind_of(record: Activation) -> Kind:
    """Action records carry their runtime `kind` annotation; trigger records never do."""
    return "action" if annotation(record, "kind") is not None else "trigger"


def matches(selected: ActivationFilter, record: Activation) -> bool:
    if selected.name is not None and entity_path(record) != selected.name:
        return False
    if selected.status is not None:
        status = record.response.status
        if selected.status == SUCCESS and status != SUCCESS:
            return False
        if selected.status == FAILED and status == SUCCESS:
            return False
        if selected.status not in (SUCCESS, FAILED) and status != selected.status:
            return False
    if selected.kind is not None and kind_of(record) != selected.kind:
        return False
    if selected.cause is not None and selected.cause not in (record.cause, record.activationId):
        return False
    return selected.since is None or record.start >= selected.since


def subject_filter(namespace: str, selected: ActivationFilter) -> str:
    """The narrowest ACTIVATIONS subject filter for a namespace's stream: records travel on
    `activation.<ns>.<pkg/name>` (a trigger's on its name), so a `name` filter is a subject of its own."""
    if selected.name is not None:
        return subjects.activation_subject(namespace, selected.name)
    return subjects.activation_filter(namespace)


def history_range(after: int, first_in_stream: int) -> tuple[int, int] | None:
    """The positions (exclusive bounds) to read from MongoDB before JetStream takes over, or None when JetStream
    still holds the one after `after`. JetStream holds positions from `first_in_stream` on (0: empty stream)."""
    if first_in_stream == 0 or after + 1 >= first_in_stream:
        return None
    return after, first_in_stream
