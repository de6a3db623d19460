"""Routes for reading activations: list (with filters), one record, its result and its logs."""

from __future__ import annotations

import re

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import query_bool
from api.context import JSON, authenticated, state
from api.listing import LIST_PARAMS, page_of
from api.routing import Operation, Param, route
from broker.activations import Activation, ActivationResponse, ActivationSummary, summarize
from broker.entities import validate_name
from broker.errors import BadRequest

COLLECTION_PATH = "/api/v1/namespaces/{namespace}/activations"
ENTITY_PATH = COLLECTION_PATH + "/{activationid}"
TAG = "Activations"

ACTIVATION_ID_LENGTH = 32
# OpenWhisk parses `skip` as a JVM Int and `since`/`upto` as a JVM Long; beyond that it answers 400.
_MAX_SKIP = 2**31 - 1
_LONG = (-(2**63), 2**63 - 1)
_EPOCH = re.compile(r"[+-]?[0-9]+")
_HEX = frozenset("0123456789abcdef")

LIST_QUERY = (
    *LIST_PARAMS,
    Param(name="docs", type="boolean", description="Return full records instead of summaries"),
    Param(name="name", description="Only activations of this action (`name` or `package/name`)"),
    Param(name="since", type="integer", description="Only activations started at or after (epoch ms)"),
    Param(name="upto", type="integer", description="Only activations started at or before (epoch ms)"),
)


class ActivationCount(msgspec.Struct, frozen=True, kw_only=True):
    """`GET …/activations?count=true`."""

    activations: int


class ActivationLogs(msgspec.Struct, frozen=True, kw_only=True):
    """`GET …/activations/{id}/logs`."""

    logs: list[str]


def name_filter(value: str | None) -> str | None:
    """The `name` filter as stored paths read (`name` or `pkg/name`); empty means no filter."""
    if value is None or not value.strip():
        return None
    parts = [p for p in value.split("/") if p]
    try:
        if not 1 <= len(parts) <= 2:
            raise BadRequest()
        for part in parts:
            validate_name(part)
    except BadRequest:
        raise BadRequest(f"Parameter may be a 'simple' name or 'package-name/simple' name: {value}") from None
    return "/".join(parts)


def epoch_ms(value: str | None) -> int | None:
    """A `since`/`upto` bound in epoch milliseconds; anything but a 64-bit integer is a 400."""
    if value is None or value == "":
        return None
    if _EPOCH.fullmatch(value) and _LONG[0] <= int(value) <= _LONG[1]:
        return int(value)
    raise BadRequest(f"Parameter is not a valid value for epoch seconds: {value}")


def activation_id(value: str) -> str:
    """A path's activation id, refused (400) in OpenWhisk's words unless it is 32 lowercase hex digits."""
    if len(value) != ACTIVATION_ID_LENGTH:
        raise BadRequest(f"Activation id length is {len(value)} but must be {ACTIVATION_ID_LENGTH}.")
    if not set(value) <= _HEX:
        raise BadRequest("The activation id is not valid.")
    return value


@route(
    COLLECTION_PATH,
    "GET",
    Operation(
        summary="List activations, newest first; summaries unless `docs=true`",
        tag=TAG,
        query=LIST_QUERY,
        # Full records (docs=true) carry every summary field, so the summary schema describes both.
        response=list[ActivationSummary] | ActivationCount,
    ),
)
@authenticated
async def list_activations(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    page = page_of(request)
    if page.skip > _MAX_SKIP:
        raise BadRequest(f"The value '{page.skip}' is not an integer for activations.")
    docs = query_bool(request, "docs")
    params = request.query_params
    name = name_filter(params.get("name"))
    since, upto = epoch_ms(params.get("since")), epoch_ms(params.get("upto"))
    store = state(request).activations
    if page.count:
        if docs:
            raise BadRequest("The parameter 'docs' is not permitted with 'count'.")
        total = await store.count(namespace, name=name, since=since, upto=upto)
        return JSON(ActivationCount(activations=max(0, total - page.skip)))
    records = await store.list(namespace, name=name, since=since, upto=upto, skip=page.skip, limit=page.limit)
    return JSON(records if docs else [summarize(r) for r in records])


async def _record(request: Request, identity: Identity) -> Activation:
    namespace = identity.resolve(request.path_params["namespace"])
    aid = activation_id(request.path_params["activationid"])
    return await state(request).activations.get(namespace, aid)


@route(
    ENTITY_PATH,
    "GET",
    Operation(summary="Get an activation record", tag=TAG, response=Activation, errors=(400, 404)),
)
@authenticated
async def get_activation(request: Request, identity: Identity) -> Response:
    return JSON(await _record(request, identity))


@route(
    ENTITY_PATH + "/result",
    "GET",
    Operation(
        summary="Get the response of an activation: `{status, success, result}`",
        tag=TAG,
        response=ActivationResponse,
        errors=(400, 404),
    ),
)
@authenticated
async def get_activation_result(request: Request, identity: Identity) -> Response:
    return JSON((await _record(request, identity)).response)


@route(
    ENTITY_PATH + "/logs",
    "GET",
    Operation(
        summary="Get the log lines of an activation", tag=TAG, response=ActivationLogs, errors=(400, 404)
    ),
)
@authenticated
async def get_activation_logs(request: Request, identity: Identity) -> Response:
    return JSON(ActivationLogs(logs=(await _record(request, identity)).logs))


routes = [list_activations, get_activation, get_activation_result, get_activation_logs]
