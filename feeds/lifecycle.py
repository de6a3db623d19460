"""The feed lifecycle (OpenWhisk §4.1) served by the feeds role: CREATE / READ / UPDATE / DELETE / PAUSE / UNPAUSE.

Action containers have no network, so the catalog's feed actions cannot call a provider the way OpenWhisk's do:
the API sends their invocations here (core NATS request, queue group `feeds`), and each call is answered and
recorded as a normal activation, its result the feed's answer or `{"error", "statusCode"}`. The `authKey` must own
the trigger named by `triggerName` (`/ns/name`, `_` for the key's namespace): otherwise 403 and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from broker import codec, subjects
from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, log_time, make_response
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.entities import ACTIONS, TRIGGERS, Action, KeyValue, split_path, validate_name
from broker.entity_store import EntityStore
from broker.errors import BadRequest, Conflict, Forbidden, NotFound, SquallError, Unauthorized
from broker.feed_registry import (
    PAUSED,
    FeedReason,
    FeedRegistration,
    FeedRegistry,
    feed_provider_of,
    health_of,
)
from broker.invocations import Invocation
from broker.namespaces import key_matches, split_key
from feeds.providers import FeedProvider, check_scope, provider_parameters

log = logging.getLogger("squall.feeds")

CREATE, READ, UPDATE, DELETE, PAUSE, UNPAUSE = "CREATE", "READ", "UPDATE", "DELETE", "PAUSE", "UNPAUSE"
LIFECYCLE_EVENTS: Final = (CREATE, READ, UPDATE, DELETE, PAUSE, UNPAUSE)
QUEUE_GROUP: Final = "feeds"
# The status a refused call reports in its result, as OpenWhisk's alarms provider reports its own.
_STATUS: Final[tuple[tuple[type[SquallError], int], ...]] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (BadRequest, 400),
)


def lifecycle_event(params: Mapping[str, Any]) -> str:
    raw = params.get("lifecycleEvent")
    event = raw.strip().upper() if isinstance(raw, str) else ""
    if event not in LIFECYCLE_EVENTS:
        allowed = ", ".join(LIFECYCLE_EVENTS)
        raise BadRequest(f"The parameter 'lifecycleEvent' must be one of {allowed}.")
    return event


def trigger_of(params: Mapping[str, Any], key_namespace: str) -> tuple[str, str]:
    """(namespace, trigger) from `triggerName` (`/ns/name`, `ns/name` or `name`; `_` is the key's namespace)."""
    raw = params.get("triggerName")
    if not isinstance(raw, str) or not raw.strip("/"):
        raise BadRequest("The parameter 'triggerName' is required: '/namespace/trigger'.")
    namespace, name = split_path(raw.strip("/"))
    if namespace is None or namespace == "_":
        namespace = key_namespace
    return namespace, validate_name(name)


def status_of(exc: SquallError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


class FeedLifecycle:
    """Serves lifecycle calls for `providers` (by name); `async with FeedLifecycle(...)` subscribes, exit
    stops taking calls and lets those in progress finish."""

    def __init__(
        self,
        bus: JetStreamBus,
        store: EntityStore,
        providers: Mapping[str, FeedProvider],
        *,
        system_namespace: str,
        drain_timeout_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.registry = FeedRegistry(bus)
        self.providers = dict(providers)
        self.system_namespace = system_namespace
        self.drain_timeout_s = drain_timeout_s
        self._sub: Any = None
        self._calls: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FeedLifecycle:
        self._sub = await self.bus.subscribe(
            subjects.FEED_LIFECYCLE_SUBJECT, self._on_call, queue=QUEUE_GROUP
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        if self._calls:
            await asyncio.wait(self._calls, timeout=self.drain_timeout_s)
        for task in self._calls:
            task.cancel()

    async def _on_call(self, msg: Msg) -> None:
        # A call may wait on KV; the subscription's callbacks run one at a time, so each gets its own task.
        task = asyncio.create_task(self._answer(msg))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            invocation = codec.decode(msg.data, Invocation)
            record = await self.call(invocation)
            payload = codec.encode(record)
            # Recorded like any run: on ACTIVATIONS (msg id = activation id) before the caller hears of it.
            root = record.namespace
            await self.bus.publish(
                subjects.activation_subject(root, record.name), payload, msg_id=record.activationId
            )
            await msg.respond(payload)
        except Exception:
            log.exception("a feed lifecycle call failed")  # the caller's request times out: a 202 or a 503

    async def call(self, invocation: Invocation) -> Activation:
        """The record of one lifecycle call of a feed action."""
        start = now_ms()
        root, _, path = invocation.action.partition("/")
        action = (await self.store.get(ACTIONS, root, path)).entity
        try:
            result = await self._serve(action, root, invocation.params)
            response = make_response(SUCCESS, result)
            line = f"{lifecycle_event(invocation.params)} {invocation.params.get('triggerName')}: done"
        except SquallError as exc:
            status = status_of(exc)
            if status == 500:
                log.error("feed %s: %s", invocation.action, exc.message)
            response = make_response(APPLICATION_ERROR, {"error": exc.message, "statusCode": status})
            line = f"refused ({status}): {exc.message}"
        end = now_ms()
        annotations = [
            KeyValue(key="path", value=invocation.action),
            KeyValue(key="kind", value=action.exec.kind),
            KeyValue(
                key="waitTime", value=max(0, start - invocation.published) if invocation.published else 0
            ),
        ]
        if invocation.binding:
            annotations.append(KeyValue(key="binding", value=invocation.binding))
        return Activation(
            namespace=invocation.namespace,
            name=action.name,
            subject=invocation.subject,
            activationId=invocation.activationId,
            start=start,
            end=end,
            duration=end - start,
            cause=invocation.cause,
            response=response,
            logs=[f"{log_time(end)} stdout: {line}"],
            version=action.version,
            publish=False,
            annotations=annotations,
        )

    async def _serve(self, action: Action, owner: str, params: Mapping[str, Any]) -> dict[str, Any]:
        name = feed_provider_of(action, owner, self.system_namespace)
        provider = self.providers.get(name or "")
        if provider is None:
            raise BadRequest(f"The action /{owner}/{action.name} is not a feed served by this platform.")
        event = lifecycle_event(params)
        key_namespace, key_uuid = await self._key_owner(params.get("authKey"))
        namespace, trigger = trigger_of(params, key_namespace)
        if namespace != key_namespace:
            raise Forbidden()
        if event == DELETE:
            await self.registry.get(namespace, trigger)  # NotFound when it has no feed
            await self.registry.delete(namespace, trigger)
            return {}
        await self.store.get(TRIGGERS, namespace, trigger)  # NotFound, or WrongCollection (409)
        now = now_ms()
        if event == CREATE:
            config = provider.configure(provider_parameters(params), None, now)
            check_scope(provider, namespace, config)
            registration = FeedRegistration(
                namespace=namespace,
                trigger=trigger,
                feed=f"/{action.namespace}/{action.name}",
                provider=provider.name,
                config=config,
                subject=key_uuid,
                created=now,
                updated=now,
            )
            await self.registry.create(registration)
            return provider.answer(registration)
        registration, revision = await self.registry.get(namespace, trigger)
        if registration.provider != provider.name:
            raise BadRequest(f"The trigger's feed is {registration.feed}, not /{owner}/{action.name}.")
        if event == READ:
            return await self._read(provider, registration)
        if event == UPDATE:
            config = provider.configure(provider_parameters(params), registration.config, now)
            check_scope(provider, namespace, config)
            changed = msgspec.structs.replace(registration, config=config, updated=now)
        else:  # PAUSE / UNPAUSE
            paused = event == PAUSE
            reason = FeedReason(kind=PAUSED, message="Paused by a PAUSE lifecycle call.") if paused else None
            changed = msgspec.structs.replace(registration, active=not paused, reason=reason, updated=now)
        await self.registry.update(changed, revision)
        return {}

    async def _read(self, provider: FeedProvider, registration: FeedRegistration) -> dict[str, Any]:
        status = await self.registry.status(registration.namespace, registration.trigger)
        config = {
            "name": registration.trigger,
            "namespace": registration.namespace,
            **registration.config,
            **provider.answer(registration),
        }
        return {"config": config, "status": codec.to_builtins(health_of(registration, status))}

    async def _key_owner(self, raw: Any) -> tuple[str, str]:
        """(namespace, uuid) of the key given as `authKey`; Forbidden when it is missing or not valid."""
        if not isinstance(raw, str):
            raise Forbidden("The parameter 'authKey' is required: the key of the trigger's namespace.")
        try:
            uuid, secret = split_key(raw)
        except Unauthorized:
            raise Forbidden() from None
        record = await self.store.find_key(uuid)
        if record is None or not key_matches(record, secret):
            raise Forbidden()
        return record.namespace, uuid
