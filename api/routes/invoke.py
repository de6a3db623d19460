"""Invoking an action: `POST …/actions/[{pkg}/]{name}`, blocking or not, through JetStream to an invoker."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity, credentials_of
from api.blocking_answer import blocking_body
from api.body import query_bool, read_bytes
from api.context import JSON, authenticated, state
from api.gateway import ACTIVATION_ID_HEADER, ActivationIdBody
from api.package_access import resolve_package
from api.request_id import request_id_of
from api.routing import Operation, Param, route
from api.trace import traceparent_of
from broker import codec, kinds, trace_context
from broker.action_refs import action_arguments
from broker.activations import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS, Activation, new_activation_id
from broker.clock import now_ms
from broker.entities import ACTIONS, Action, KeyValue, split_path
from broker.errors import BadRequest
from broker.feed_registry import feed_provider_of
from broker.invocations import Invocation, hands_api_key
from broker.key_seal import key_seal
from broker.limits import PAYLOAD_MAX_BYTES, nested_deeper_than, nesting_message

log = logging.getLogger("squall.api")

MAX_WAIT_MS: Final = 60_000  # controller.activation.max-wait-for-blocking-activation

_ENTITY = "/api/v1/namespaces/{namespace}/actions/{name:path}"


def invalid_timeout() -> BadRequest:
    return BadRequest(
        "The query parameter 'timeout' was malformed:\n"
        f"Timeout must be number of milliseconds up to {MAX_WAIT_MS}."
    )


def wait_ms(raw: str | None) -> int:
    """The `timeout` query parameter: how long a blocking invoke waits, 1..60000 ms (default 60000)."""
    if raw is None or raw == "":
        return MAX_WAIT_MS
    try:
        value = int(raw)
    except ValueError:
        raise invalid_timeout() from None
    if not 0 < value <= MAX_WAIT_MS:
        raise invalid_timeout()
    return value


def http_status(record: Activation) -> int:
    """200 for success, 502 for the action's own failures, 500 for the platform's (OpenWhisk's mapping)."""
    status = record.response.status
    if status == SUCCESS:
        return 200
    if status in (APPLICATION_ERROR, DEVELOPER_ERROR):
        return 502
    return 500


def parse_payload(raw: bytes) -> dict[str, Any]:
    """The invoke body: a JSON object, an empty body meaning `{}`; anything else is a 400 as in OpenWhisk."""
    if not raw.strip():
        return {}
    value = codec.decode_json(raw)
    if not isinstance(value, dict):
        raise BadRequest("The request content was malformed:\nObject expected.")
    if nested_deeper_than(value, raw=raw):  # its record could not be stored
        raise BadRequest(f"The request content was malformed:\n{nesting_message()}")
    return value


# -- resolving what to run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The action an invoke path names, where it lives, and the parameters beneath its own."""

    action: Action
    owner: str  # the namespace that owns the action
    path: str  # `name` or `pkg/name` in the owner namespace
    parameters: list[KeyValue]  # package < binding
    binding: str | None  # `ns/binding` when invoked through a binding


async def resolve_target(request: Request, identity: Identity) -> Target:
    store = state(request).store
    package, name = split_path(request.path_params["name"])
    if package is None:
        owner = identity.resolve(request.path_params["namespace"])
        action = (await state(request).gateway.actions.get(ACTIONS, owner, name)).entity
        return Target(action=action, owner=owner, path=name, parameters=[], binding=None)
    resolved = await resolve_package(store, identity, request.path_params["namespace"], package)
    pkg = resolved.package
    path = f"{pkg.name}/{name}"
    action = (await store.get(ACTIONS, pkg.namespace, path)).entity
    requested = resolved.requested
    binding = f"{requested.namespace}/{requested.name}" if requested.binding.is_bound else None
    return Target(
        action=action, owner=pkg.namespace, path=path, parameters=resolved.parameters, binding=binding
    )


def sealed_key_for(request: Request, identity: Identity, target: Target) -> str | None:
    """The caller's key, sealed for the invoker (broker/key_seal.py), when the run may hand it on: to an action
    of the caller's own that asks for it (`provide-api-key`, true when absent, as OpenWhisk reads it), or to a
    sequence, whose components each decide. None without an invocation secret: no key then travels at all."""
    action = target.action
    if action.exec.kind != kinds.SEQUENCE and not hands_api_key(
        action.annotations, target.owner, identity.namespace
    ):
        return None
    seal = key_seal(state(request).settings.invocation_secret)
    if seal is None:
        return None
    uuid, secret = credentials_of(request.headers.get("authorization"))
    return seal.seal(f"{uuid}:{secret}", identity.namespace)


# -- the route ---------------------------------------------------------------------------------------------


@route(
    _ENTITY,
    "POST",
    Operation(
        summary=(
            "Invoke an action; `blocking=true` waits for its record (at most `timeout` ms, 60 s): 200 success, "
            "502 the action failed, 202 still running; `result=true` answers the result alone"
        ),
        tag="Actions",
        query=(
            Param(name="blocking", type="boolean", description="Wait for the activation to finish"),
            Param(name="result", type="boolean", description="With blocking: answer only the result"),
            Param(
                name="timeout",
                type="integer",
                minimum=1,
                maximum=MAX_WAIT_MS,
                description="With blocking: how long to wait, in ms (default and max 60000)",
            ),
        ),
        body=dict[str, Any],
        # The full Activation record, or with `result=true` only the action's result (any JSON object or
        # array); one schema cannot say both, so neither is constrained.
        response=Any,
        other_responses={202: ActivationIdBody, 502: Any},
        errors=(400, 403, 404, 413, 429, 503),
    ),
)
@authenticated
async def invoke_action(request: Request, identity: Identity) -> Response:
    blocking = query_bool(request, "blocking")
    result_only = query_bool(request, "result")
    wait = wait_ms(request.query_params.get("timeout"))
    payload = parse_payload(await read_bytes(request, PAYLOAD_MAX_BYTES))
    target = await resolve_target(request, identity)
    action = target.action
    kinds.check_invocable(action.exec.kind)
    # The caller's namespace pays, as in OpenWhisk; a sequence counts once, its components not at all.
    await state(request).throttles.check_invoke(identity.namespace)
    invocation = Invocation(
        activationId=new_activation_id(),
        namespace=identity.namespace,
        action=f"{target.owner}/{target.path}",
        params=action_arguments(action, target.parameters, payload),
        blocking=blocking,
        subject=identity.uuid,
        sealed_api_key=sealed_key_for(request, identity, target),
        transaction_id=request_id_of(request),
        binding=target.binding,
        published=now_ms(),
        traceparent=trace_context.child(traceparent_of(request)),
    )
    aid = invocation.activationId
    activations = state(request).activations

    async def lookup() -> Activation | None:
        return await activations.get(identity.namespace, aid)

    gateway = state(request).gateway
    if feed_provider_of(action, target.owner, state(request).settings.system_namespace) is not None:
        # Answered by the feeds role: quick, so even a non-blocking call learns of a missing feeds process.
        record = await gateway.call_feed(invocation, wait / 1000)
        if not blocking:
            record = None
    else:
        record = await gateway.invoke(
            invocation, wait / 1000 if blocking else None, lookup, family=kinds.family_of(action.exec.kind)
        )
    headers = {ACTIVATION_ID_HEADER: aid}
    if record is None:
        return JSON(ActivationIdBody(activationId=aid), 202, headers=headers)
    return JSON(blocking_body(record, result_only), http_status(record), headers=headers)


routes = [invoke_action]
