"""The roles a process can run (api, broker, …) and the backbone connections they share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import TracebackType

from api.app import create_app
from api.server import ApiServer
from broker.activation_store import ActivationStore
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.recorder import ActivationRecorder

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
            self.store = EntityStore(self.bus)
            self.activations = await stack.enter_async_context(
                ActivationStore(
                    self.settings.mongodb_uri,
                    self.settings.mongodb_database,
                    self.settings.activation_retention_days,
                )
            )
            await self.activations.provision()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def api_role(settings: Settings, backbone: Backbone) -> AsyncIterator[ApiServer]:
    app = create_app(settings, backbone.store, backbone.activations)
    async with ApiServer(
        app, settings.api_host, settings.api_port, drain_timeout_s=settings.drain_timeout_s
    ) as api:
        yield api


@contextlib.asynccontextmanager
async def broker_role(settings: Settings, backbone: Backbone) -> AsyncIterator[None]:
    # The rule engine, sequences and retries join here as they are built; today: the activation recorder.
    async with ActivationRecorder(
        backbone.bus, backbone.activations, drain_timeout_s=settings.drain_timeout_s
    ):
        yield
