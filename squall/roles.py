"""The roles a process can run (api, broker, …) and the backbone connections they share."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from types import TracebackType

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from api.server import ApiServer
from broker import log_context
from broker.activation_store import ActivationStore
from broker.activation_upkeep import ActivationUpkeep, namespace_birth, namespace_retention
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.key_cache import KeyCache
from broker.otlp_export import OtlpExporter
from broker.queues import InvokeQueues
from broker.recorder import ActivationRecorder
from broker.rule_engine import RuleEngine
from broker.throttles import Throttles
from feeds.service import FeedsRole
from runtimes.invoker import invoker_role

ROLES = ("api", "broker", "invoker", "feeds")


class Backbone:
    """Connections to NATS (bus + entity store) and MongoDB (activations), provisioned idempotently."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Backbone:
        async with contextlib.AsyncExitStack() as stack:
            self.bus = await stack.enter_async_context(JetStreamBus(self.settings))
            # Consumers included: before any role serves, so that no fire can precede the engine's consumer.
            await self.bus.provision()
            self.store = EntityStore(self.bus)
            self.activations = await stack.enter_async_context(ActivationStore.from_settings(self.settings))
            await self.activations.provision()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def api_role(
    settings: Settings, backbone: Backbone, *, listener: socket.socket | None = None
) -> AsyncIterator[ApiServer]:
    """The API on `settings.api_host:api_port`, or on `listener` (a socket its supervisor bound and shares)."""
    log_context.set_role("api")
    # The gateway, key cache and throttles outlive the server on both ends: no request may find them missing.
    async with (
        Throttles(backbone.bus, backbone.store, settings) as throttles,
        InvokeGateway(
            backbone.bus, queues=InvokeQueues(backbone.bus, settings, throttles.concurrency_of)
        ) as gateway,
        KeyCache(backbone.bus, backbone.store) as keys,
    ):
        app = create_app(
            settings, backbone.store, backbone.activations, keys, gateway=gateway, throttles=throttles
        )
        streams = app_state(app).streams
        try:
            async with ApiServer(
                app,
                settings.api_host,
                settings.api_port,
                drain_timeout_s=settings.drain_timeout_s,
                sock=listener,
            ) as api:
                try:
                    yield api
                finally:
                    # Live streams never end by themselves: end them first, or the drain would wait them out.
                    streams.close()
        finally:
            await streams.aclose()  # no live reader outlives the server


@contextlib.asynccontextmanager
async def invoker_role_for(settings: Settings, backbone: Backbone) -> AsyncIterator[None]:
    """The invoker: a container pool on the rootless Podman service, pulling from INVOKE; actions reach the
    API (`__OW_API_HOST`) at `settings.api_url`."""
    log_context.set_role("invoker")
    async with invoker_role(settings, backbone.bus, backbone.store):
        yield


@contextlib.asynccontextmanager
async def feeds_role(settings: Settings, backbone: Backbone) -> AsyncIterator[FeedsRole]:
    """The feeds: lifecycle calls of the catalog's feed actions, alarms, webhooks' and NATS subjects' fires."""
    log_context.set_role("feeds")
    async with (
        Throttles(backbone.bus, backbone.store, settings) as throttles,
        FeedsRole(settings, backbone.bus, backbone.store, throttles) as feeds,
    ):
        yield feeds


@contextlib.asynccontextmanager
async def broker_role(settings: Settings, backbone: Backbone) -> AsyncIterator[None]:
    """The rule engine (trigger events → invocations), the activation recorder (records → MongoDB) and the
    activation upkeep (retention)."""
    log_context.set_role("broker")
    async with (
        ActivationRecorder(
            backbone.bus,
            backbone.activations,
            drain_timeout_s=settings.drain_timeout_s,
            ack_wait_s=settings.broker_ack_wait_s,
        ),
        ActivationUpkeep(
            backbone.activations,
            namespace_retention(backbone.store, settings.activation_retention_days),
            born_of=namespace_birth(backbone.store),
        ),
        Throttles(backbone.bus, backbone.store, settings) as throttles,
        # Each rule's run counts against the namespace's limits, but waits instead of being refused.
        RuleEngine(
            backbone.bus,
            backbone.store,
            settings,
            schedule=throttles.book_event_run,
            queues=InvokeQueues(backbone.bus, settings, throttles.concurrency_of),
        ),
        contextlib.AsyncExitStack() as optional,
    ):
        if settings.otlp_endpoint:
            await optional.enter_async_context(
                OtlpExporter(backbone.bus, settings.otlp_endpoint, drain_timeout_s=settings.drain_timeout_s)
            )
        yield
