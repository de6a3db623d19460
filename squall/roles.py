"""The roles a process can run (api, broker, …) and the backbone connections they share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import TracebackType

import msgspec

from api.app import create_app
from api.routes.invoke import InvokeGateway, attach
from api.server import ApiServer
from api.throttling import attach_throttles
from broker.activation_store import ActivationStore
from broker.activation_upkeep import ActivationUpkeep, namespace_retention
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.key_cache import KeyCache
from broker.recorder import ActivationRecorder
from broker.rule_engine import RuleEngine, ensure_consumer
from broker.throttles import Throttles
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
            await self.bus.provision()
            # Before any role serves, so that no fire can precede the consumer that will see it.
            await ensure_consumer(self.bus, self.settings)
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
async def api_role(settings: Settings, backbone: Backbone) -> AsyncIterator[ApiServer]:
    # The gateway, key cache and throttles outlive the server on both ends: no request may find them missing.
    async with (
        InvokeGateway(backbone.bus) as gateway,
        KeyCache(backbone.bus, backbone.store) as keys,
        Throttles(backbone.bus, backbone.store, settings) as throttles,
    ):
        app = create_app(settings, backbone.store, backbone.activations, keys)
        attach(app, gateway)
        attach_throttles(app, throttles)
        async with ApiServer(
            app, settings.api_host, settings.api_port, drain_timeout_s=settings.drain_timeout_s
        ) as api:
            yield api


@contextlib.asynccontextmanager
async def invoker_role_for(settings: Settings, backbone: Backbone, api_url: str) -> AsyncIterator[None]:
    """The invoker: a container pool on the rootless Podman service, pulling from INVOKE.

    `api_url` is what actions get as `__OW_API_HOST`; in standalone it is the API's real address.
    """
    host, _, port = api_url.removeprefix("http://").rpartition(":")
    settings = msgspec.structs.replace(settings, api_host=host, api_port=int(port))
    async with invoker_role(settings, backbone.bus, backbone.store):
        yield


@contextlib.asynccontextmanager
async def broker_role(settings: Settings, backbone: Backbone) -> AsyncIterator[None]:
    """The rule engine (trigger events → invocations), the activation recorder (records → MongoDB) and the
    activation upkeep (retention)."""
    async with (
        ActivationRecorder(
            backbone.bus,
            backbone.activations,
            drain_timeout_s=settings.drain_timeout_s,
            ack_wait_s=settings.broker_ack_wait_s,
        ),
        ActivationUpkeep(
            backbone.activations, namespace_retention(backbone.store, settings.activation_retention_days)
        ),
        Throttles(backbone.bus, backbone.store, settings) as throttles,
        # Each rule's run counts against the namespace's invocation throttles, as OpenWhisk's does.
        RuleEngine(backbone.bus, backbone.store, settings, admit=throttles.admit_invocation),
    ):
        yield
