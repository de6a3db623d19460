"""The catalog's alarm feed actions, made by the tests that need them until the catalog installs them itself."""

from __future__ import annotations

import contextlib

from broker.admin import create_namespace
from broker.entities import ACTIONS, PACKAGES, Action, Exec, KeyValue, Package
from broker.entity_store import EntityStore
from broker.errors import Conflict
from broker.feed_registry import FEED_PROVIDER_ANNOTATION

ALARM_FEEDS = ("alarm", "interval", "once")


async def ensure_alarm_feeds(store: EntityStore, system_namespace: str) -> None:
    """`/<system>/alarms/{alarm,interval,once}` as feed actions served by the feeds role; idempotent (what
    exists, e.g. installed by the catalog, is left as it is)."""
    with contextlib.suppress(Conflict):
        await create_namespace(store, system_namespace)
    with contextlib.suppress(Conflict):
        await store.create(PACKAGES, Package(namespace=system_namespace, name="alarms", publish=True))
    for name in ALARM_FEEDS:
        action = Action(
            namespace=f"{system_namespace}/alarms",
            name=name,
            publish=True,
            exec=Exec(kind="nodejs:18", code="function main(params) { return {}; }"),
            annotations=[
                KeyValue(key="feed", value=True),
                KeyValue(key=FEED_PROVIDER_ANNOTATION, value=name),
            ],
        )
        with contextlib.suppress(Conflict):
            await store.create(ACTIONS, action)
