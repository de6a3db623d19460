"""Routes for triggers: list, get, create or update, delete (firing one: routes/fire.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity
from api.body import query_bool, read_json
from api.context import JSON, authenticated, state
from api.crud import put_entity
from api.listing import LIST_PARAMS, page_of
from api.routing import Operation, Param, route
from api.trigger_views import TriggerCount, TriggerPut, TriggerSummary, build_trigger, check_put, summary
from broker.entities import TRIGGERS, Trigger, validate_name
from broker.feed_registry import FeedRegistry

COLLECTION_PATH = "/api/v1/namespaces/{namespace}/triggers"
ENTITY_PATH = COLLECTION_PATH + "/{name}"
TAG = "Triggers"

OVERWRITE = Param(name="overwrite", type="boolean", description="Replace the trigger if it exists")


def _target(request: Request, identity: Identity) -> tuple[str, str]:
    """The (namespace, trigger name) a request addresses; another namespace is 403, a bad name 400."""
    namespace = identity.resolve(request.path_params["namespace"])
    return namespace, validate_name(request.path_params["name"])


@route(
    COLLECTION_PATH,
    "GET",
    Operation(
        summary="List the triggers of a namespace, most recently updated first",
        tag=TAG,
        query=LIST_PARAMS,
        response=list[TriggerSummary] | TriggerCount,
    ),
)
@authenticated
async def list_triggers(request: Request, identity: Identity) -> Response:
    namespace = identity.resolve(request.path_params["namespace"])
    page = page_of(request)
    triggers = await state(request).store.list(TRIGGERS, namespace)
    if page.count:
        return JSON(TriggerCount(triggers=max(0, len(triggers) - page.skip)))
    return JSON([summary(t) for t in page.slice(triggers)])


@route(
    ENTITY_PATH,
    "GET",
    Operation(
        summary="Get a trigger, with the rules bound to it and their status",
        tag=TAG,
        response=Trigger,
        errors=(400, 404),
    ),
)
@authenticated
async def get_trigger(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    stored = await state(request).store.get(TRIGGERS, namespace, name)
    return JSON(stored.entity)


@route(
    ENTITY_PATH,
    "PUT",
    Operation(
        summary="Create a trigger, or update it with `overwrite=true`",
        tag=TAG,
        query=(OVERWRITE,),
        body=TriggerPut,
        response=Trigger,
        errors=(400, 409, 413),
    ),
)
@authenticated
async def put_trigger(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    overwrite = query_bool(request, "overwrite")
    put = await read_json(request, TriggerPut)
    check_put(put)
    stored = await put_entity(
        state(request).store,
        TRIGGERS,
        namespace,
        name,
        overwrite=overwrite,
        build=lambda current: build_trigger(put, namespace, name, current),
    )
    return JSON(stored)


@route(
    ENTITY_PATH,
    "DELETE",
    Operation(
        summary="Delete a trigger and its feed, if it has one; its rules stay, and read as inactive",
        tag=TAG,
        response=Trigger,
        errors=(400, 404, 409),
    ),
)
@authenticated
async def delete_trigger(request: Request, identity: Identity) -> Response:
    namespace, name = _target(request, identity)
    # Rules are not touched, as in OpenWhisk: a rule whose trigger is gone reads `inactive`, and a trigger
    # created again under the same name starts without links until its rules are enabled again.
    store = state(request).store
    deleted = await store.delete(TRIGGERS, namespace, name)
    # Beyond OpenWhisk, where a feed outlives a trigger deleted without its DELETE lifecycle call: no fire may
    # find a trigger of the same name created later.
    await FeedRegistry(store.bus).delete(namespace, name)
    return JSON(deleted)


routes = [list_triggers, get_trigger, put_trigger, delete_trigger]
