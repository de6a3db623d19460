"""The alarm feeds' lifecycle through the REST API (a blocking invoke of the catalog's feed actions), served by
an in-process feeds role: OpenWhisk's checks, READ, UPDATE, DELETE, the 403, and the firing rules."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entities import TRIGGERS
from broker.entity_store import EntityStore
from broker.errors import NotFound
from broker.feed_registry import AUTO, FeedRegistry
from broker.throttles import Throttles
from feeds.service import FeedsRole
from tests.conditions import eventually
from tests.integration.feeds_support import ensure_catalog

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def feeds(
    settings: Settings, bus: JetStreamBus, store: EntityStore, app: Starlette
) -> AsyncIterator[FeedsRole]:
    """The feeds role, and the API's gateway to it (without one an invoke is a 503)."""
    await ensure_catalog(store, settings)
    async with (
        InvokeGateway(bus) as gateway,
        Throttles(bus, store, settings) as throttles,
        FeedsRole(settings, bus, store, throttles) as role,
    ):
        app_state(app).gateway = gateway
        yield role


async def lifecycle(
    client: httpx.AsyncClient, feed: str, event: str, trigger: str, key: str, **params: Any
) -> httpx.Response:
    body = {"lifecycleEvent": event, "triggerName": f"/_/{trigger}", "authKey": key, **params}
    return await client.post(
        f"/api/v1/namespaces/whisk.system/actions/alarms/{feed}?blocking=true", json=body
    )


def refusal(response: httpx.Response) -> tuple[int, str]:
    assert response.status_code == 502, response.text
    result = response.json()["response"]["result"]
    return result["statusCode"], result["error"]


async def make_trigger(client: httpx.AsyncClient, name: str | None = None) -> str:
    name = name or f"t-{uuid.uuid4().hex[:8]}"
    response = await client.put(f"/api/v1/namespaces/_/triggers/{name}", json={})
    assert response.status_code == 200, response.text
    return name


FUTURE = "2099-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("feed", "params", "message"),
    [
        ("alarm", {}, "alarms trigger feed is missing the cron parameter"),
        ("alarm", {"cron": "* * * 99 *"}, "cron pattern '* * * 99 *' is not valid"),
        ("alarm", {"cron": "* * * * *", "timezone": "Moon/Tranquility"}, "Invalid timezone."),
        (
            "alarm",
            {"cron": "* * * * *", "startDate": "yesterday"},
            "startDate parameter 'yesterday' is not a valid Date",
        ),
        (
            "alarm",
            {"cron": "* * * * *", "maxTriggers": 2, "stopDate": FUTURE},
            "maxTriggers is not allowed when the stopDate parameter is specified",
        ),
        ("interval", {"minutes": 0.5}, "the minutes parameter must be an integer"),
        ("interval", {"minutes": -1}, "the minutes parameter must be an integer greater than zero"),
        ("once", {}, "alarms once trigger feed is missing the date parameter"),
        ("once", {"date": 1_000}, "date parameter '1000' must be in the future"),
        ("once", {"date": FUTURE, "deleteAfterFire": "later"}, "deleteAfterFire parameter must be one of"),
    ],
)
async def test_create_refuses_bad_parameters_with_openwhisk_messages(
    feeds: FeedsRole,
    ns_client: httpx.AsyncClient,
    namespace: tuple[str, str],
    feed: str,
    params: dict[str, Any],
    message: str,
) -> None:
    trigger = await make_trigger(ns_client)
    status, error = refusal(await lifecycle(ns_client, feed, "CREATE", trigger, namespace[1], **params))
    assert status == 400
    assert message in error
    with pytest.raises(NotFound):
        await FeedRegistry(feeds.bus).get(namespace[0], trigger)


async def test_another_namespaces_key_is_refused_and_registers_nothing(
    feeds: FeedsRole, ns_client: httpx.AsyncClient, namespace: tuple[str, str], store: EntityStore
) -> None:
    from broker.admin import create_namespace

    trigger = await make_trigger(ns_client)
    other = await create_namespace(store, f"other-{uuid.uuid4().hex[:8]}")
    body = {
        "lifecycleEvent": "CREATE",
        "triggerName": f"/{namespace[0]}/{trigger}",
        "authKey": other,
        "cron": "* * * * *",
    }
    response = await ns_client.post(
        "/api/v1/namespaces/whisk.system/actions/alarms/alarm?blocking=true", json=body
    )
    status, _ = refusal(response)
    assert status == 403
    with pytest.raises(NotFound):
        await FeedRegistry(feeds.bus).get(namespace[0], trigger)


async def test_create_read_update_delete(
    feeds: FeedsRole, ns_client: httpx.AsyncClient, namespace: tuple[str, str]
) -> None:
    key = namespace[1]
    trigger = await make_trigger(ns_client)
    created = await lifecycle(
        ns_client,
        "alarm",
        "CREATE",
        trigger,
        key,
        cron="0 9 * * 1-5",
        timezone="Europe/Berlin",
        trigger_payload="wake up",
    )
    assert created.status_code == 200, created.text
    read = await lifecycle(ns_client, "alarm", "READ", trigger, key)
    assert read.status_code == 200, read.text
    answer = read.json()["response"]["result"]
    assert answer["config"] == {
        "name": trigger,
        "namespace": namespace[0],
        "payload": {"payload": "wake up"},
        "cron": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
    }
    assert answer["status"]["active"] is True

    async def next_fire_known() -> bool:
        status = await FeedRegistry(feeds.bus).status(namespace[0], trigger)
        return status.nextFire is not None

    await eventually(next_fire_known, 15, "the scheduler's nextFire in the status")
    updated = await lifecycle(ns_client, "alarm", "UPDATE", trigger, key, cron="30 8 * * *")
    assert updated.status_code == 200, updated.text
    read = await lifecycle(ns_client, "alarm", "READ", trigger, key)
    assert read.json()["response"]["result"]["config"]["cron"] == "30 8 * * *"
    assert (await lifecycle(ns_client, "alarm", "DELETE", trigger, key)).status_code == 200
    status, _ = refusal(await lifecycle(ns_client, "alarm", "READ", trigger, key))
    assert status == 404


async def test_a_fire_refused_with_404_disables_the_alarm(
    feeds: FeedsRole, ns_client: httpx.AsyncClient, namespace: tuple[str, str], store: EntityStore
) -> None:
    trigger = await make_trigger(ns_client)
    created = await lifecycle(ns_client, "alarm", "CREATE", trigger, namespace[1], cron="* * * * * *")
    assert created.status_code == 200, created.text
    # Gone behind the feed's back (the REST API's DELETE would remove the feed too).
    await store.delete(TRIGGERS, namespace[0], trigger)
    registry = FeedRegistry(feeds.bus)

    async def disabled() -> bool:
        registration, _ = await registry.get(namespace[0], trigger)
        return not registration.active

    await eventually(disabled, 10, "the alarm disabled")
    registration, _ = await registry.get(namespace[0], trigger)
    assert registration.reason is not None
    assert registration.reason.kind == AUTO
    assert registration.reason.statusCode == 404
    assert registration.reason.message.startswith("Trigger automatically disabled:")


async def test_a_once_alarm_fires_then_deletes_its_trigger_and_rules(
    feeds: FeedsRole, ns_client: httpx.AsyncClient, namespace: tuple[str, str], store: EntityStore
) -> None:
    trigger = await make_trigger(ns_client)
    action = await ns_client.put(
        "/api/v1/namespaces/_/actions/noop", json={"exec": {"kind": "nodejs:18", "code": "function main(){}"}}
    )
    assert action.status_code == 200, action.text
    rule = await ns_client.put(
        "/api/v1/namespaces/_/rules/r1", json={"trigger": f"/_/{trigger}", "action": "/_/noop"}
    )
    assert rule.status_code == 200, rule.text
    date = int(time.time() * 1000) + 1500
    created = await lifecycle(
        ns_client, "once", "CREATE", trigger, namespace[1], date=date, deleteAfterFire="rules"
    )
    assert created.status_code == 200, created.text

    async def gone() -> bool:
        return (await ns_client.get(f"/api/v1/namespaces/_/triggers/{trigger}")).status_code == 404

    await eventually(gone, 10, "the trigger deleted after the once alarm fired")
    assert (await ns_client.get("/api/v1/namespaces/_/rules/r1")).status_code == 404
    assert feeds.alarms.fires >= 1
    with pytest.raises(NotFound):
        await FeedRegistry(feeds.bus).get(namespace[0], trigger)
