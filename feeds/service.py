"""The feeds role: serves the catalog feed actions' lifecycle calls and runs each provider's firing."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType

from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_cache import EntityCache
from broker.entity_store import EntityStore
from broker.firing import FireCheck, TriggerFiring
from broker.queues import EventQueues
from feeds.alarm_scheduler import AlarmScheduler
from feeds.alarms import PROVIDERS as ALARM_PROVIDERS
from feeds.alarms import AlarmProvider
from feeds.lifecycle import FeedLifecycle
from feeds.nats_feed import NatsFeedProvider
from feeds.nats_runner import NatsFeedRunner
from feeds.providers import FeedProvider
from feeds.webhooks import WebhookProvider


def providers(settings: Settings) -> Sequence[FeedProvider]:
    """Every provider this build serves, by the name the catalog's `squall-feed` annotations use."""
    return (
        *(AlarmProvider(name) for name in ALARM_PROVIDERS),
        WebhookProvider(settings.webhook_url),
        NatsFeedProvider(),
    )


class FeedsRole:
    """`async with FeedsRole(settings, bus, store, throttles)`: lifecycle calls served, feeds firing through
    the same path as HTTP fires (throttles, records, rules); exit stops intake and drains."""

    def __init__(
        self, settings: Settings, bus: JetStreamBus, store: EntityStore, throttles: FireCheck
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.throttles = throttles
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> FeedsRole:
        settings = self.settings
        async with contextlib.AsyncExitStack() as stack:
            triggers = await stack.enter_async_context(EntityCache(self.bus, self.store))
            self.firing = TriggerFiring(
                self.bus,
                triggers,
                EventQueues(self.bus, settings),
                self.throttles,
                max_hops=settings.max_hops,
                tracing=settings.trace_context,
            )
            self.providers = {provider.name: provider for provider in providers(settings)}
            await stack.enter_async_context(
                FeedLifecycle(
                    self.bus,
                    self.store,
                    self.providers,
                    system_namespace=settings.system_namespace,
                    drain_timeout_s=settings.drain_timeout_s,
                )
            )
            # Webhooks fire from the API role (api/routes/webhooks.py); NATS subjects from here.
            self.nats_feeds = await stack.enter_async_context(
                NatsFeedRunner(
                    self.bus,
                    self.firing,
                    ack_wait_s=settings.broker_ack_wait_s,
                    drain_timeout_s=settings.drain_timeout_s,
                )
            )
            self.alarms = await stack.enter_async_context(
                AlarmScheduler(settings, self.bus, self.store, self.firing)
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
