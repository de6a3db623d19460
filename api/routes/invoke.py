"""Invoking an action: `POST …/actions/[{pkg}/]{name}`, blocking or not, through JetStream to an invoker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Identity, credentials_of
from api.blocking_answer import blocking_body
from api.body import query_bool, read_bytes
from api.context import JSON, authenticated, services
from api.request_id import request_id_of
from api.routes.packages import resolve_package
from api.routing import Operation, Param, route
from api.throttling import throttles_of
from broker import codec, kinds, large_records, subjects
from broker.action_refs import action_arguments
from broker.activations import APPLICATION_ERROR, DEVELOPER_ERROR, SUCCESS, Activation, new_activation_id
from broker.bus import JetStreamBus
from broker.entities import ACTIONS, Action, KeyValue, split_path
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from broker.health import INVOKERS_BUCKET, InvokerRegistry, now_ms
from broker.invocations import PROVIDE_API_KEY, RESULT_HEADER, Invocation
from broker.limits import PAYLOAD_MAX_BYTES, too_large_message

log = logging.getLogger("squall.api")

MAX_WAIT_MS: Final = 60_000  # controller.activation.max-wait-for-blocking-activation
ACTIVATION_ID_HEADER: Final = "x-openwhisk-activation-id"
# While a blocking request waits for the invoker's notice, the store is checked this often, in case the
# notice was lost (e.g. the API's NATS connection was re-established at that moment).
STORE_POLL_S: Final = 5.0

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
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise BadRequest("The request content was malformed:\nThe body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadRequest("The request content was malformed:\nObject expected.")
    return value


# -- the gateway: publishing invocations and waiting for their records ---------------------------------------


class InvokeGateway:
    """The API side of invoking: publishes invocations, hands each waiting request its record, and knows
    which invokers are up. `async with InvokeGateway(bus) as gateway: attach(app, gateway)`."""

    def __init__(
        self, bus: JetStreamBus, *, health_bucket: str = INVOKERS_BUCKET, store_poll_s: float = STORE_POLL_S
    ) -> None:
        self.bus = bus
        self.registry = InvokerRegistry(bus, bucket=health_bucket)
        self.actions = EntityCache(bus, EntityStore(bus))
        self.store_poll_s = store_poll_s
        self._inbox = ""
        self._sub: Any = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> InvokeGateway:
        nc = self.bus.nc
        self._inbox = nc.new_inbox()
        # One subscription for every waiting request: a per-request SUB/UNSUB would cost two messages each.
        self._sub = await nc.subscribe(f"{self._inbox}.*", cb=self._on_record)
        await self.registry.__aenter__()
        await self.actions.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.actions.__aexit__(exc_type, exc, tb)
        await self.registry.__aexit__(exc_type, exc, tb)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        for fut in self._waiting.values():
            fut.cancel()

    async def _on_record(self, msg: Msg) -> None:
        fut = self._waiting.get(msg.subject.rpartition(".")[2])
        if fut is not None and not fut.done():
            data = await large_records.with_result(self.bus, msg.data, msg.headers)
            if not fut.done():  # the wait may have ended while a large record was read
                fut.set_result(data)

    async def invoke(
        self,
        invocation: Invocation,
        subject: str,
        wait_s: float | None,
        lookup: Callable[[], Awaitable[Activation | None]] | None = None,
    ) -> Activation | None:
        """Publish `invocation`; with `wait_s`, wait that long for its record (None when it is not done)."""
        if not await self.registry.any_healthy():
            raise Unavailable()
        payload = codec.encode(invocation)
        if len(payload) > self.bus.nc.max_payload:  # merged parameters can pass what the body alone could not
            raise PayloadTooLarge(too_large_message(len(payload), self.bus.nc.max_payload))
        aid = invocation.activationId
        if wait_s is None:
            await self.bus.publish(subject, payload, msg_id=aid)
            return None
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[aid] = fut  # registered before publishing: the record cannot arrive unseen
        try:
            await self.bus.publish(
                subject, payload, msg_id=aid, headers={RESULT_HEADER: f"{self._inbox}.{aid}"}
            )
            data = await self._wait(fut, wait_s, lookup)
        finally:
            self._waiting.pop(aid, None)
        return None if data is None else codec.decode(data, Activation)

    async def _wait(
        self,
        fut: asyncio.Future[bytes],
        wait_s: float,
        lookup: Callable[[], Awaitable[Activation | None]] | None,
    ) -> bytes | None:
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(fut), min(left, self.store_poll_s))
            if lookup is not None:
                with contextlib.suppress(NotFound, Unavailable):
                    found = await lookup()
                    if found is not None:
                        return codec.encode(found)


def attach(app: Starlette, gateway: InvokeGateway) -> None:
    """Make `gateway` the one the invoke and invokers routes of `app` use."""
    app.state.invoke_gateway = gateway


def gateway_of(request: Request) -> InvokeGateway:
    gateway = getattr(request.app.state, "invoke_gateway", None)
    if not isinstance(gateway, InvokeGateway):
        raise Unavailable()
    return gateway


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
    store = services(request).store
    package, name = split_path(request.path_params["name"])
    if package is None:
        owner = identity.resolve(request.path_params["namespace"])
        action = (await gateway_of(request).actions.get(ACTIONS, owner, name)).entity
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


def api_key_for(request: Request, action: Action) -> str | None:
    """The caller's key, for actions that ask for it (`provide-api-key`, true when absent, as OpenWhisk reads it).
    A sequence carries it for its components, which each decide for themselves."""
    if action.exec.kind != kinds.SEQUENCE:
        for pair in reversed(action.annotations):
            if pair.key == PROVIDE_API_KEY:
                if pair.value in (False, None, 0, ""):
                    return None
                break
    uuid, secret = credentials_of(request.headers.get("authorization"))
    return f"{uuid}:{secret}"


# -- the route ---------------------------------------------------------------------------------------------


class ActivationIdBody(msgspec.Struct, frozen=True, kw_only=True):
    activationId: str


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
    await throttles_of(request).check_invoke(identity.namespace)
    invocation = Invocation(
        activationId=new_activation_id(),
        namespace=identity.namespace,
        action=f"{target.owner}/{target.path}",
        params=action_arguments(action, target.parameters, payload),
        blocking=blocking,
        subject=identity.uuid,
        api_key=api_key_for(request, action),
        transaction_id=request_id_of(request),
        binding=target.binding,
        published=now_ms(),
    )
    aid = invocation.activationId
    activations = services(request).activations

    async def lookup() -> Activation | None:
        return await activations.get(identity.namespace, aid)

    record = await gateway_of(request).invoke(
        invocation,
        subjects.invoke_subject(target.owner, target.path),
        wait / 1000 if blocking else None,
        lookup,
    )
    headers = {ACTIVATION_ID_HEADER: aid}
    if record is None:
        return JSON(ActivationIdBody(activationId=aid), 202, headers=headers)
    return JSON(blocking_body(record, result_only), http_status(record), headers=headers)


routes = [invoke_action]
