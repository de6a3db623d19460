"""Dead letters of a namespace (a Squall addition): list, read, redrive, delete one, purge all."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.context import JSON, authenticated, state
from api.gateway import ActivationIdBody
from api.listing import LIST_PARAMS, page_of
from api.routing import Operation, route
from broker.clock import now_ms
from broker.dead_letters import DeadLetter, DeadLetters, public, validate_letter_id

COLLECTION_PATH = "/api/v1/namespaces/{namespace}/deadletters"
ENTITY_PATH = COLLECTION_PATH + "/{id}"
TAG = "Dead letters"


class DeadLetterCount(msgspec.Struct, frozen=True, kw_only=True):
    """`GET …/deadletters?count=true`."""

    deadletters: int


class PurgeCount(msgspec.Struct, frozen=True, kw_only=True):
    """`DELETE …/deadletters`: how many letters were removed."""

    purged: int


def dead_letters_of(request: Request) -> DeadLetters:
    """The dead letters on the bus of the app's invoke gateway (503 while there is none)."""
    return DeadLetters(state(request).gateway.bus)


def _target(request: Request, identity: Identity) -> tuple[str, str]:
    namespace = identity.resolve(request.path_params["namespace"])
    return namespace, validate_letter_id(request.path_params["id"])


@route(
    COLLECTION_PATH,
    "GET",
    Operation(
        summary="List the dead letters of a namespace, newest first: rule-fired runs that failed for good",
        tag=TAG,
        query=LIST_PARAMS,
        response=list[DeadLetter] | DeadLetterCount,
        errors=(400, 503),
    ),
)
@authenticated
async def list_dead_letters(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    page = page_of(request)
    letters = dead_letters_of(request)
    if page.count:
        return JSON(DeadLetterCount(deadletters=max(0, await letters.count(namespace) - page.skip)))
    found = await letters.list(namespace, skip=page.skip, limit=page.limit)
    return JSON([public(letter) for letter in found])


@route(
    ENTITY_PATH,
    "GET",
    Operation(summary="Get a dead letter", tag=TAG, response=DeadLetter, errors=(400, 404, 503)),
)
@authenticated
async def get_dead_letter(request: Request, identity: Identity) -> Response:
    namespace, letter_id = _target(request, identity)
    return JSON(public(await dead_letters_of(request).get(namespace, letter_id)))


@route(
    ENTITY_PATH + "/redrive",
    "POST",
    Operation(
        summary="Run a dead letter's invocation again under a new activation id; the letter is removed",
        tag=TAG,
        response=ActivationIdBody,
        status=202,
        errors=(400, 404, 503),
    ),
)
@authenticated
async def redrive_dead_letter(request: Request, identity: Identity) -> Response:
    namespace, letter_id = _target(request, identity)
    activation_id = await dead_letters_of(request).redrive(namespace, letter_id, now_ms())
    return JSON(ActivationIdBody(activationId=activation_id), 202)


@route(
    ENTITY_PATH,
    "DELETE",
    Operation(
        summary="Delete a dead letter; answers it", tag=TAG, response=DeadLetter, errors=(400, 404, 503)
    ),
)
@authenticated
async def delete_dead_letter(request: Request, identity: Identity) -> Response:
    namespace, letter_id = _target(request, identity)
    return JSON(public(await dead_letters_of(request).delete(namespace, letter_id)))


@route(
    COLLECTION_PATH,
    "DELETE",
    Operation(summary="Delete every dead letter of a namespace", tag=TAG, response=PurgeCount, errors=(503,)),
)
@authenticated
async def purge_dead_letters(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    return JSON(PurgeCount(purged=await dead_letters_of(request).purge(namespace)))


routes = [list_dead_letters, get_dead_letter, redrive_dead_letter, delete_dead_letter, purge_dead_letters]
