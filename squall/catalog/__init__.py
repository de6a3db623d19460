"""The whisk.system catalog: its packages and actions as data, and the installer that keeps them current."""

from __future__ import annotations

from broker.feed_registry import FEED_PROVIDER_ANNOTATION
from squall.catalog.installer import Installed, ensure_system_namespace, install_catalog
from squall.catalog.manifest import feed_providers


def feed_actions(system_namespace: str) -> dict[str, str]:
    """Each feed action of the catalog, fully qualified (`/whisk.system/alarms/alarm`), and the provider of
    the feeds role that serves it (`alarm`, `interval`, `once`, `webhook`, `natsFeed`)."""
    return {f"/{system_namespace}/{path}": provider for path, provider in feed_providers().items()}


__all__ = [
    "FEED_PROVIDER_ANNOTATION",
    "Installed",
    "ensure_system_namespace",
    "feed_actions",
    "feed_providers",
    "install_catalog",
]
