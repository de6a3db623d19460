"""`GET …/activations/stream`: a namespace's activation records live over Server-Sent Events, resumable.

Each event is `event: activation`, `id: <position>` and the record as `GET …/activations/{id}` returns it.
Without `Last-Event-ID`, `since` or `after` the stream starts with the next new record; `Last-Event-ID` (which
EventSource clients send by themselves when they reconnect) resumes after that position with no gap and no
duplicate. A comment line comes every `stream_heartbeat_s` while nothing happens; a client that reads too slowly
gets a final `event: overflow` with the last position it was sent, and the stream ends (api/sse.py). The live
records of a namespace are read once per API process and shared by its streams (broker/activation_fanout.py); a
resuming stream catches up on its own first (broker/activation_source.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.auth import Identity
from api.context import authenticated, state
from api.routes.activations import COLLECTION_PATH, TAG, activation_id, epoch_ms, name_filter
from api.routing import Operation, Param, route
from api.sse import EventStream, frame
from broker.activation_feed import Start
from broker.activation_filter import FAILED, KINDS, ActivationFilter, Kind
from broker.activation_source import ActivationSource
from broker.activations import STATUS_CODES
from broker.errors import BadRequest

STREAM_PATH = COLLECTION_PATH + "/stream"
EVENT = "activation"
_MAX_POSITION = 2**63 - 1

STREAM_QUERY = (
    Param(name="since", type="integer", description="Start with the records started at or after (epoch ms)"),
    Param(name="after", description="Start after the record with this activation id"),
    Param(name="name", description="Only records of this action or trigger (`name` or `package/name`)"),
    Param(
        name="status",
        description="`success`, `failed` (anything but success), or one status such as `application error`",
    ),
    Param(name="kind", enum=KINDS, description="Only action records, or only trigger records"),
    Param(
        name="cause", description="Everything one trigger fire caused: its record and every record it caused"
    ),
)


def stream_filter(request: Request) -> ActivationFilter:
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status != FAILED and status not in STATUS_CODES:
        allowed = ", ".join(["failed", *STATUS_CODES])
        raise BadRequest(f"The status filter must be one of: {allowed}.")
    kind = params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise BadRequest("The kind filter must be 'action' or 'trigger'.")
    cause = params.get("cause") or None
    return ActivationFilter(
        name=name_filter(params.get("name")),
        status=status,
        kind=_kind(kind),
        cause=None if cause is None else activation_id(cause),
        since=epoch_ms(params.get("since")),
    )


def _kind(value: str | None) -> Kind | None:
    return "action" if value == "action" else "trigger" if value == "trigger" else None


def last_event_id(value: str | None) -> int | None:
    """A `Last-Event-ID` header: a position sent by this stream (a non-negative integer)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isdigit() or int(text) > _MAX_POSITION:
        raise BadRequest(f"The Last-Event-ID '{text[:64]}' is not a position of this stream.")
    return int(text)


async def start_of(request: Request, namespace: str, selected: ActivationFilter) -> Start:
    """Where the stream starts: `Last-Event-ID` wins (a reconnecting client sends it with its first URL),
    then `after`, then `since`; none of them means live."""
    resumed = last_event_id(request.headers.get("last-event-id"))
    if resumed is not None:
        return Start(after=resumed)
    after = request.query_params.get("after") or None
    if after is not None:
        if selected.since is not None:
            raise BadRequest("The parameters 'after' and 'since' cannot be combined.")
        position = await state(request).activations.position_of(namespace, activation_id(after))
        if position is None:
            raise BadRequest(
                f"The activation {after} was recorded before streams had positions: use 'since'."
            )
        return Start(after=position)
    return Start(since=selected.since)


@route(
    STREAM_PATH,
    "GET",
    Operation(
        summary="Stream the namespace's activation records live (Server-Sent Events), resumable",
        tag=TAG,
        query=STREAM_QUERY,
        response=str,
        content_type="text/event-stream",
        errors=(400, 404, 429, 503),
    ),
)
@authenticated
async def stream_activations(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    selected = stream_filter(request)
    start = await start_of(request, namespace, selected)
    shared = state(request)
    settings = shared.settings
    hub = shared.streams
    readers = hub.readers(shared.store.bus, shared.activations, render)
    source = ActivationSource(readers, namespace, selected, start, window=settings.stream_window)
    hub.open(namespace)  # 429 past the cap; released when the stream ends, however it ends
    try:
        await source.open()  # the namespace's live reader exists: a record stored from now on is sent
    except BaseException:
        await source.aclose()
        hub.release(namespace, "failed")
        raise
    stream = EventStream(
        source,
        heartbeat_s=settings.stream_heartbeat_s,
        stall_s=settings.stream_stall_s,
        closing=hub.closing,
        on_end=lambda reason: hub.release(namespace, reason, source.held, source.catch_ups),
        on_stall=hub.stall,
        start_position=start.after,
    )
    return StreamResponse(stream)


def render(position: int, record: bytes) -> bytes:
    """An activation record as its SSE event: rendered once per record by a live reader, shared by its streams."""
    return frame(EVENT, record, position)


class StreamResponse(Response):
    """Lets Starlette return the EventStream as a handler's response."""

    def __init__(self, stream: EventStream) -> None:
        super().__init__(media_type="text/event-stream")
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream(scope, receive, send)


routes = [stream_activations]
