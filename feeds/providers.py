"""What a feed provider (alarms, webhooks, NATS subjects) gives the lifecycle calls: validation and answers.

The lifecycle (feeds/lifecycle.py) owns the protocol — who may act on which trigger, storing registrations,
records — and asks the provider only what is particular to it. Firing is each provider's own runner's business
(a scheduler, an HTTP ingress, a JetStream consumer), reading the registrations from KV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

from broker.feed_registry import FeedRegistration

# Parameters of the lifecycle protocol itself (OpenWhisk §4.1), never part of a provider's configuration.
LIFECYCLE_PARAMETERS: Final = frozenset({"lifecycleEvent", "triggerName", "authKey"})


class FeedProvider(Protocol):
    """One kind of feed, by the name a catalog feed action's `squall-feed` annotation gives."""

    name: str

    def configure(
        self, params: Mapping[str, Any], previous: Mapping[str, Any] | None, now_ms: int
    ) -> dict[str, Any]:
        """The configuration to store for a CREATE (`previous` None) or an UPDATE (`previous` = the stored one)
        with these parameters (lifecycle parameters removed); BadRequest with a clear message when invalid."""
        ...

    def answer(self, registration: FeedRegistration) -> dict[str, Any]:
        """What a CREATE answers and a READ shows in `config` besides the stored configuration (e.g. a
        webhook's URL and secret); usually nothing."""
        ...


@runtime_checkable
class ScopedProvider(Protocol):
    """A provider whose configuration is valid only within the trigger's namespace (a NATS feed's subject must
    lie under the namespace's prefix). Optional: the lifecycle asks it after `configure` when a provider has it,
    so providers without namespace rules keep `FeedProvider`'s signature."""

    def check_scope(self, namespace: str, config: Mapping[str, Any]) -> None:
        """BadRequest with a clear message when `config` reaches outside `namespace`."""
        ...


def check_scope(provider: FeedProvider, namespace: str, config: Mapping[str, Any]) -> None:
    if isinstance(provider, ScopedProvider):
        provider.check_scope(namespace, config)


def provider_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A lifecycle call's parameters without the protocol's own."""
    return {key: value for key, value in params.items() if key not in LIFECYCLE_PARAMETERS}
