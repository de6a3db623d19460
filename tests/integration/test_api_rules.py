"""Rules over HTTP against the real KV store: references, status kept on the trigger, relinking, 4xx cases."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from broker.admin import create_namespace
from broker.entities import (
    ACTIONS,
    PACKAGES,
    RULES,
    TRIGGERS,
    Action,
    Binding,
    Exec,
    FullyQualifiedName,
    Package,
    Rule,
    Trigger,
)
from broker.entity_store import EntityStore, Stored
from broker.errors import ConcurrentModification, NotFound
from broker.rules import rewrite_trigger
from tests.integration.conftest import basic

MB = 1024 * 1024


def rules(name: str = "", namespace: str = "_") -> str:
    base = f"/api/v1/namespaces/{namespace}/rules"
    return f"{base}/{name}" if name else base


def triggers(name: str, namespace: str = "_") -> str:
    return f"/api/v1/namespaces/{namespace}/triggers/{name}"


def ns_of(client: httpx.AsyncClient) -> str:
    name: str = client.namespace  # type: ignore[attr-defined]
    return name


async def add_action(store: EntityStore, namespace: str, name: str, package: str | None = None) -> None:
    """Actions come straight from the store: these tests are about rules, not the actions API."""
    home = namespace if package is None else f"{namespace}/{package}"
    await store.create(ACTIONS, Action(namespace=home, name=name, exec=Exec(kind="nodejs:18", code="x")))


async def add_package(store: EntityStore, namespace: str, name: str, **fields: Any) -> None:
    await store.create(PACKAGES, Package(namespace=namespace, name=name, **fields))


async def add_trigger(client: httpx.AsyncClient, name: str) -> None:
    assert (await client.put(triggers(name), json={})).status_code == 200


async def trigger_rules(client: httpx.AsyncClient, name: str) -> Any:
    r = await client.get(triggers(name))
    assert r.status_code == 200
    return r.json().get("rules")


@pytest.fixture
async def setup(ns_client: httpx.AsyncClient, store: EntityStore) -> str:
    """A namespace with trigger `t`, a second trigger `t2` and actions `a` and `b`."""
    ns = ns_of(ns_client)
    await add_trigger(ns_client, "t")
    await add_trigger(ns_client, "t2")
    await add_action(store, ns, "a")
    await add_action(store, ns, "b")
    return ns


async def put_rule(client: httpx.AsyncClient, name: str, body: Any, query: str = "") -> dict[str, Any]:
    r = await client.put(rules(name) + query, json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def status_of(client: httpx.AsyncClient, name: str) -> str:
    r = await client.get(rules(name))
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


async def test_create_links_an_active_rule_on_its_trigger(ns_client: httpx.AsyncClient, setup: str) -> None:
    ns = setup
    body = await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    assert body["namespace"] == ns and body["name"] == "r"
    assert body["status"] == "active"
    assert body["trigger"] == {"path": ns, "name": "t"}
    assert body["action"] == {"path": ns, "name": "a"}
    assert body["version"] == "0.0.1" and body["publish"] is False and body["annotations"] == []
    assert await trigger_rules(ns_client, "t") == {
        f"{ns}/r": {"action": {"path": ns, "name": "a"}, "status": "active"}
    }
    got = (await ns_client.get(rules("r"))).json()
    assert got == body


@pytest.mark.parametrize(
    "refs",
    [
        lambda ns: {"trigger": f"/{ns}/t", "action": f"/{ns}/a"},
        lambda ns: {"trigger": "t", "action": "a"},  # relative to the caller's namespace
        lambda ns: {"trigger": {"path": "_", "name": "t"}, "action": {"path": ns, "name": "a"}},
    ],
)
async def test_references_may_be_qualified_relative_or_objects(
    ns_client: httpx.AsyncClient, setup: str, refs: Any
) -> None:
    body = await put_rule(ns_client, "r", refs(setup))
    assert body["trigger"] == {"path": setup, "name": "t"}
    assert body["action"] == {"path": setup, "name": "a"}


async def test_a_rule_may_name_a_packaged_action_or_one_through_a_binding(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    ns = setup
    await add_package(store, ns, "pkg")
    await add_action(store, ns, "inner", package="pkg")
    await add_package(store, ns, "bound", binding=Binding(namespace=ns, name="pkg"))
    body = await put_rule(ns_client, "direct", {"trigger": "/_/t", "action": "/_/pkg/inner"})
    assert body["action"] == {"path": f"{ns}/pkg", "name": "inner"}
    # The rule keeps the name it was given; the binding is resolved only to check the action exists.
    body = await put_rule(ns_client, "via", {"trigger": "/_/t", "action": "/_/bound/inner"})
    assert body["action"] == {"path": f"{ns}/bound", "name": "inner"}
    r = await ns_client.put(rules("miss"), json={"trigger": "/_/t", "action": "/_/bound/nothing"})
    assert r.status_code == 400
    assert r.json()["error"] == f"action /{ns}/bound/nothing does not exist"


async def test_public_actions_of_other_namespaces_may_be_used_private_ones_not(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    other = f"ns-{uuid.uuid4().hex[:10]}"
    await create_namespace(store, other)
    await add_package(store, other, "shared", publish=True)
    await add_action(store, other, "act", package="shared")
    await add_package(store, other, "private")
    await add_action(store, other, "act", package="private")
    await add_action(store, other, "top")
    body = await put_rule(ns_client, "pub", {"trigger": "/_/t", "action": f"/{other}/shared/act"})
    assert body["action"] == {"path": f"{other}/shared", "name": "act"}
    for target in (f"{other}/private/act", f"{other}/top"):
        r = await ns_client.put(rules("priv"), json={"trigger": "/_/t", "action": f"/{target}"})
        assert r.status_code == 403
        assert r.json()["error"] == f"The supplied authentication is not authorized to access '{target}'."
    r = await ns_client.put(rules("priv"), json={"trigger": f"/{other}/t", "action": f"/{other}/top"})
    assert r.status_code == 403
    assert r.json()["error"] == (
        f"The supplied authentication is not authorized to access '{other}/t, {other}/top'."
    )
    assert (await ns_client.get(rules("priv"))).status_code == 404


async def test_missing_references_are_400_and_write_nothing(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    ns = setup
    cases = [
        ({"trigger": "/_/nope", "action": "/_/a"}, f"trigger /{ns}/nope does not exist"),
        ({"trigger": "/_/t", "action": "/_/nope"}, f"action /{ns}/nope does not exist"),
        ({"trigger": "/_/nope", "action": "/_/nope"}, f"trigger /{ns}/nope does not exist"),
        ({"trigger": "/_/t", "action": "/_/nopkg/a"}, f"action /{ns}/nopkg/a does not exist"),
        (
            {"trigger": "/_/a", "action": "/_/a"},
            f"trigger /{ns}/a does not exist",
        ),  # an action, not a trigger
        ({"trigger": "/_/t", "action": "/_/t"}, f"action /{ns}/t does not exist"),
        ({"trigger": "/_/t"}, "rule requires a valid trigger and a valid action"),
        ({"action": "/_/a"}, "rule requires a valid trigger and a valid action"),
        ({}, "rule requires a valid trigger and a valid action"),
    ]
    for body, message in cases:
        r = await ns_client.put(rules("r"), json=body)
        assert (r.status_code, r.json()["error"]) == (400, message), body
    with pytest.raises(NotFound):
        await store.get(RULES, ns, "r")
    assert await trigger_rules(ns_client, "t") is None


@pytest.mark.parametrize(
    "raw",
    [
        b"{oops",
        b'{"trigger": 5, "action": "/_/a"}',
        b'{"trigger": "/_/t", "action": "/a/b/c/d"}',
        b'{"trigger": "/_/t", "action": "/_/bad*name"}',
        b'{"trigger": {"path": "_"}, "action": "/_/a"}',
        b'{"trigger": "/_/t", "action": "/_/a", "annotations": {"a": 1}}',
        b'{"trigger": "/_/t", "action": "/_/a", "version": "x.y"}',
    ],
)
async def test_malformed_bodies_are_400_and_write_nothing(
    ns_client: httpx.AsyncClient, setup: str, raw: bytes
) -> None:
    r = await ns_client.put(rules("r"), content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "code"}
    assert (await ns_client.get(rules("r"))).status_code == 404
    assert await trigger_rules(ns_client, "t") is None


async def test_oversized_annotations_are_413(ns_client: httpx.AsyncClient, setup: str) -> None:
    big = [{"key": "k", "value": "a" * MB}]
    r = await ns_client.put(rules("r"), json={"trigger": "/_/t", "action": "/_/a", "annotations": big})
    assert r.status_code == 413
    assert r.json()["error"] == f"annotations larger than allowed: {MB + 3} > {MB} bytes."
    assert (await ns_client.get(rules("r"))).status_code == 404


async def test_put_without_overwrite_on_an_existing_rule_is_409(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    r = await ns_client.put(rules("r"), json={"trigger": "/_/t2", "action": "/_/b"})
    assert (r.status_code, r.json()["error"]) == (409, "resource already exists")
    got = (await ns_client.get(rules("r"))).json()
    assert got["trigger"]["name"] == "t" and got["action"]["name"] == "a"


async def test_disable_and_enable_answer_an_empty_200_and_change_the_trigger(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    for status in ("inactive", "inactive", "active", "active"):  # repeating a state is a no-op 200
        r = await ns_client.post(rules("r"), json={"status": status})
        assert r.status_code == 200, r.text
        assert r.content == b""
        assert await status_of(ns_client, "r") == status
        assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"]["status"] == status


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"status": "xxx"}', "requirement failed: xxx is not a recognized rule state"),
        (b'{"status": 1}', "requirement failed: 1 is not a recognized rule state"),
        (b"{}", "key not found: status"),
        (b"", "key not found: status"),
        (b"{", "The body is not valid JSON."),
    ],
)
async def test_a_bad_status_request_is_400_even_for_a_missing_rule(
    ns_client: httpx.AsyncClient, setup: str, raw: bytes, message: str
) -> None:
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    for name in ("r", "missing"):
        r = await ns_client.post(rules(name), content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"] == f"The request content was malformed:\n{message}"
    assert await status_of(ns_client, "r") == "active"


async def test_status_of_a_missing_rule_is_404(ns_client: httpx.AsyncClient, setup: str) -> None:
    r = await ns_client.post(rules("missing"), json={"status": "active"})
    assert (r.status_code, r.json()["error"]) == (404, "The requested resource does not exist.")


async def test_a_rule_whose_trigger_is_gone_reads_inactive_and_cannot_be_enabled(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    assert (await ns_client.delete(triggers("t"))).status_code == 200
    assert await status_of(ns_client, "r") == "inactive"  # the rule stays, inactive
    r = await ns_client.post(rules("r"), json={"status": "active"})
    assert (r.status_code, r.json()["error"]) == (404, "Only rules with existing triggers can be activated")
    assert (await ns_client.post(rules("r"), json={"status": "inactive"})).status_code == 200
    # A trigger created again under the name starts without links; enabling the rule links it.
    await add_trigger(ns_client, "t")
    assert await status_of(ns_client, "r") == "inactive"
    assert (await ns_client.post(rules("r"), json={"status": "active"})).status_code == 200
    assert await status_of(ns_client, "r") == "active"
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"]["status"] == "active"


@pytest.mark.parametrize("status", ["active", "inactive"])
async def test_update_relinks_to_the_new_trigger_and_keeps_the_status(
    ns_client: httpx.AsyncClient, setup: str, status: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    assert (await ns_client.post(rules("r"), json={"status": status})).status_code == 200
    body = await put_rule(ns_client, "r", {"trigger": "/_/t2", "action": "/_/b"}, "?overwrite=true")
    assert body["status"] == status
    assert body["version"] == "0.0.2"
    assert body["trigger"] == {"path": ns, "name": "t2"} and body["action"] == {"path": ns, "name": "b"}
    assert await trigger_rules(ns_client, "t") == {}  # unlinked from the old trigger
    assert await trigger_rules(ns_client, "t2") == {
        f"{ns}/r": {"action": {"path": ns, "name": "b"}, "status": status}
    }
    assert await status_of(ns_client, "r") == status


async def test_update_of_the_action_alone_rewrites_the_link(ns_client: httpx.AsyncClient, setup: str) -> None:
    ns = setup
    await put_rule(
        ns_client, "r", {"trigger": "/_/t", "action": "/_/a", "annotations": [{"key": "k", "value": 1}]}
    )
    body = await put_rule(ns_client, "r", {"action": "/_/b"}, "?overwrite=true")
    assert body["trigger"]["name"] == "t" and body["action"]["name"] == "b"
    assert body["annotations"] == [{"key": "k", "value": 1}]
    assert body["status"] == "active"
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"]["action"] == {"path": ns, "name": "b"}
    body = await put_rule(ns_client, "r", {}, "?overwrite=true")  # nothing new: only the version moves
    assert (body["version"], body["action"]["name"]) == ("0.0.3", "b")


async def test_update_checks_the_references_it_keeps(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    await store.delete(ACTIONS, ns, "a")
    r = await ns_client.put(rules("r") + "?overwrite=true", json={})
    assert (r.status_code, r.json()["error"]) == (400, f"action /{ns}/a does not exist")
    assert (await ns_client.get(rules("r"))).json()["version"] == "0.0.1"


async def test_a_rule_whose_old_trigger_is_gone_updates_to_inactive(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    await ns_client.delete(triggers("t"))
    body = await put_rule(ns_client, "r", {"trigger": "/_/t2"}, "?overwrite=true")
    assert body["status"] == "inactive"
    assert await status_of(ns_client, "r") == "inactive"


async def test_delete_answers_inactive_and_unlinks_exactly_that_rule(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    created = await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    await put_rule(ns_client, "s", {"trigger": "/_/t", "action": "/_/b"})
    r = await ns_client.delete(rules("r"))
    assert r.status_code == 200
    assert r.json() == {**created, "status": "inactive"}
    assert (await ns_client.get(rules("r"))).status_code == 404
    assert set(await trigger_rules(ns_client, "t")) == {f"{ns}/s"}
    assert await status_of(ns_client, "s") == "active"
    assert (await ns_client.delete(rules("r"))).status_code == 404


async def test_a_rule_whose_trigger_is_gone_can_be_deleted(ns_client: httpx.AsyncClient, setup: str) -> None:
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    await ns_client.delete(triggers("t"))
    r = await ns_client.delete(rules("r"))
    assert (r.status_code, r.json()["status"]) == (200, "inactive")


async def test_trigger_updates_keep_their_rule_links(ns_client: httpx.AsyncClient, setup: str) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    r = await ns_client.put(
        triggers("t") + "?overwrite=true", json={"parameters": [{"key": "x", "value": 1}]}
    )
    assert r.status_code == 200
    assert set(r.json()["rules"]) == {f"{ns}/r"}
    assert await status_of(ns_client, "r") == "active"


async def test_list_shows_rules_without_status_and_counts(ns_client: httpx.AsyncClient, setup: str) -> None:
    for name in ("r1", "r2", "r3"):
        await put_rule(ns_client, name, {"trigger": "/_/t", "action": "/_/a"})
    items = (await ns_client.get(rules())).json()
    assert [i["name"] for i in items] == ["r3", "r2", "r1"]
    assert set(items[0]) == {
        "namespace",
        "name",
        "version",
        "publish",
        "annotations",
        "updated",
        "trigger",
        "action",
    }
    assert (await ns_client.get(rules() + "?count=true")).json() == {"rules": 3}
    assert [i["name"] for i in (await ns_client.get(rules() + "?skip=1&limit=1")).json()] == ["r2"]


async def test_another_namespaces_rules_are_403(
    ns_client: httpx.AsyncClient, client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    other_key = await create_namespace(store, f"ns-{uuid.uuid4().hex[:10]}")
    for method in ("GET", "DELETE"):
        r = await client.request(method, rules("r", setup), headers=basic(other_key))
        assert r.status_code == 403
    r = await client.post(rules("r", setup), json={"status": "inactive"}, headers=basic(other_key))
    assert r.status_code == 403
    assert await status_of(ns_client, "r") == "active"


async def test_an_unlinked_rule_reads_inactive_and_enabling_repairs_it(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    # The state a crash between "write the rule" and "link it" leaves behind.
    ns = setup
    t, a = FullyQualifiedName(path=ns, name="t"), FullyQualifiedName(path=ns, name="a")
    await store.create(RULES, Rule(namespace=ns, name="half", trigger=t, action=a))
    assert await status_of(ns_client, "half") == "inactive"
    assert (await ns_client.post(rules("half"), json={"status": "inactive"})).status_code == 200
    assert await trigger_rules(ns_client, "t") is None  # disabling an unlinked rule writes nothing
    assert (await ns_client.post(rules("half"), json={"status": "active"})).status_code == 200
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/half"] == {
        "action": {"path": ns, "name": "a"},
        "status": "active",
    }


async def test_enabling_repairs_a_link_left_pointing_at_an_older_action(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    # The state a crash between "update the rule's action" and "rewrite the link" leaves behind.
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    stored = await store.get(RULES, ns, "r")
    import msgspec

    moved = msgspec.structs.replace(stored.entity, action=FullyQualifiedName(path=ns, name="b"))
    await store.update(RULES, moved, stored.revision)
    assert (await ns_client.post(rules("r"), json={"status": "active"})).status_code == 200
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"]["action"] == {"path": ns, "name": "b"}


class RacingStore(EntityStore):
    """A store where another writer updates the trigger right after each of our first `races` reads."""

    def __init__(self, inner: EntityStore, races: int) -> None:
        super().__init__(inner._bus)
        self.races = races

    async def get(self, collection: Any, namespace: str, name: str) -> Stored[Any]:
        found = await super().get(collection, namespace, name)
        if collection is TRIGGERS and self.races > 0:
            self.races -= 1
            other = await super().get(TRIGGERS, namespace, name)
            await super().update(TRIGGERS, other.entity, other.revision)  # a real concurrent write
        return found


async def test_link_writes_retry_when_the_trigger_changes_under_them(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    ns = setup
    ref = FullyQualifiedName(path=ns, name="t")
    racing = RacingStore(store, races=2)

    def add(t: Trigger) -> Trigger | None:
        from broker.rule_links import link

        return link(t, f"{ns}/x", FullyQualifiedName(path=ns, name="a"), "active")

    assert await rewrite_trigger(racing, ref, add) is True
    assert racing.races == 0
    assert set(await trigger_rules(ns_client, "t")) == {f"{ns}/x"}
    with pytest.raises(ConcurrentModification):
        await rewrite_trigger(RacingStore(store, races=100), ref, lambda t: add(t) or t)


# Squall's rule filters and retry policies.

FILTER = {"type": ["push"], "repo": {"name": [{"prefix": "squall"}]}}
RETRY = {"attempts": 5, "delayMs": 200, "backoff": "fixed", "on": ["application error"]}
# The policy as stored and shown: fields at their scalar default are left out, `on` is always written.
ALL_FAILURES = ["application error", "action developer error", "whisk internal error"]


async def test_create_with_a_filter_and_retry_shows_them_on_the_rule_and_its_trigger(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    ns = setup
    body = await put_rule(
        ns_client, "r", {"trigger": "/_/t", "action": "/_/a", "filter": FILTER, "retry": RETRY}
    )
    assert (body["filter"], body["retry"]) == (FILTER, RETRY)
    assert body["status"] == "active"
    assert (await ns_client.get(rules("r"))).json() == body
    [item] = (await ns_client.get(rules())).json()
    assert (item["filter"], item["retry"]) == (FILTER, RETRY)
    assert await trigger_rules(ns_client, "t") == {
        f"{ns}/r": {"action": {"path": ns, "name": "a"}, "status": "active", "filter": FILTER, "retry": RETRY}
    }
    stored = (await store.get(RULES, ns, "r")).entity
    assert stored.filter == FILTER
    body = await put_rule(ns_client, "defaults", {"trigger": "/_/t", "action": "/_/a", "retry": {}})
    assert body["retry"] == {"on": ALL_FAILURES}


async def test_rules_without_filter_or_retry_have_no_such_keys(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    created = await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    nulls = await put_rule(
        ns_client, "n", {"trigger": "/_/t", "action": "/_/a", "filter": None, "retry": None}
    )
    for body in (
        created,
        nulls,
        (await ns_client.get(rules("r"))).json(),
        *(await ns_client.get(rules())).json(),
    ):
        assert "filter" not in body and "retry" not in body, body
    links = await trigger_rules(ns_client, "t")
    assert set(links[f"{ns}/r"]) == set(links[f"{ns}/n"]) == {"action", "status"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filter": {}}, "The event pattern at $ must be a non-empty object."),
        (
            {"filter": {"type": "push"}},
            "The event pattern at $.type must be an object or a list of alternatives.",
        ),
        ({"filter": {"type": []}}, "The event pattern at $.type must list 1 to 100 alternatives."),
        (
            {"filter": {"type": [{"bogus": 1}]}},
            "The event pattern at $.type uses the unknown matcher 'bogus'.",
        ),
        ({"filter": {"type": [{"prefix": 1}]}}, "The 'prefix' matcher at $.type takes a string."),
        ({"retry": {"attempts": 0}}, "The retry policy's attempts must be between 1 and 10."),
        ({"retry": {"backoff": "linear"}}, "The retry policy's backoff must be one of: fixed, exponential."),
        ({"retry": {"delayMs": 5000, "maxDelayMs": 10}}, "The retry policy's maxDelayMs must be between"),
        ({"retry": {"on": ["success"]}}, "The retry policy's 'on' must list some of:"),
        (
            {"filter": "x"},
            "The request content was malformed:\nExpected `object | null`, got `str` - at `$.filter`",
        ),
        ({"filter": ["x"]}, "The request content was malformed:\nExpected `object | null`, got `array`"),
        (
            {"retry": 5},
            "The request content was malformed:\nExpected `object | null`, got `int` - at `$.retry`",
        ),
        ({"retry": {"attempts": "3"}}, "The request content was malformed:\nExpected `int`, got `str`"),
    ],
)
async def test_an_invalid_filter_or_retry_is_400_and_writes_nothing(
    ns_client: httpx.AsyncClient, setup: str, fields: dict[str, Any], message: str
) -> None:
    r = await ns_client.put(rules("r"), json={"trigger": "/_/t", "action": "/_/a", **fields})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error", "code"}
    assert r.json()["error"].startswith(message)
    assert (await ns_client.get(rules("r"))).status_code == 404
    assert await trigger_rules(ns_client, "t") is None


async def test_an_oversized_filter_is_413_and_writes_nothing(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    big = {"type": ["x" * 1000] * 70}  # valid, but its JSON passes 64 KB
    r = await ns_client.put(rules("r"), json={"trigger": "/_/t", "action": "/_/a", "filter": big})
    assert r.status_code == 413, r.text
    assert r.json()["error"].startswith("filter larger than allowed:")
    assert r.json()["error"].endswith(f"> {64 * 1024} bytes.")
    assert (await ns_client.get(rules("r"))).status_code == 404


async def test_an_invalid_update_is_400_and_keeps_the_stored_filter_and_retry(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    created = await put_rule(
        ns_client, "r", {"trigger": "/_/t", "action": "/_/a", "filter": FILTER, "retry": RETRY}
    )
    for fields in ({"filter": {"type": "push"}}, {"retry": {"attempts": 11}}, {"retry": 5}):
        r = await ns_client.put(rules("r") + "?overwrite=true", json=fields)
        assert r.status_code == 400, fields
    assert (await ns_client.get(rules("r"))).json() == created
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"]["filter"] == FILTER


async def test_update_keeps_absent_filter_and_retry_and_null_removes_them(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a", "filter": FILTER, "retry": RETRY})
    body = await put_rule(ns_client, "r", {"action": "/_/b"}, "?overwrite=true")  # neither field given: kept
    assert (body["filter"], body["retry"], body["action"]["name"]) == (FILTER, RETRY, "b")
    link = (await trigger_rules(ns_client, "t"))[f"{ns}/r"]
    assert (link["filter"], link["retry"], link["action"]["name"]) == (FILTER, RETRY, "b")

    body = await put_rule(ns_client, "r", {"filter": None}, "?overwrite=true")  # null: removed
    assert "filter" not in body and body["retry"] == RETRY
    link = (await trigger_rules(ns_client, "t"))[f"{ns}/r"]
    assert "filter" not in link and link["retry"] == RETRY

    body = await put_rule(ns_client, "r", {"retry": None}, "?overwrite=true")
    assert "filter" not in body and "retry" not in body
    assert set((await trigger_rules(ns_client, "t"))[f"{ns}/r"]) == {"action", "status"}
    assert body["version"] == "0.0.4"


async def test_update_of_the_filter_alone_rewrites_the_link_and_keeps_the_status(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a", "filter": FILTER})
    assert (await ns_client.post(rules("r"), json={"status": "inactive"})).status_code == 200
    other = {"type": [{"anything-but": "push"}]}
    body = await put_rule(ns_client, "r", {"filter": other}, "?overwrite=true")
    assert (body["filter"], body["status"]) == (other, "inactive")
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"] == {
        "action": {"path": ns, "name": "a"},
        "status": "inactive",
        "filter": other,
    }
    # Moving to another trigger takes the filter along and leaves nothing on the old one.
    body = await put_rule(ns_client, "r", {"trigger": "/_/t2", "retry": RETRY}, "?overwrite=true")
    assert await trigger_rules(ns_client, "t") == {}
    assert (await trigger_rules(ns_client, "t2"))[f"{ns}/r"] == {
        "action": {"path": ns, "name": "a"},
        "status": "inactive",
        "filter": other,
        "retry": RETRY,
    }


async def test_disable_and_enable_keep_the_filter_and_retry_in_the_trigger_link(
    ns_client: httpx.AsyncClient, setup: str
) -> None:
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a", "filter": FILTER, "retry": RETRY})
    for status in ("inactive", "active"):
        assert (await ns_client.post(rules("r"), json={"status": status})).status_code == 200
        assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"] == {
            "action": {"path": ns, "name": "a"},
            "status": status,
            "filter": FILTER,
            "retry": RETRY,
        }
        body = (await ns_client.get(rules("r"))).json()
        assert (body["status"], body["filter"], body["retry"]) == (status, FILTER, RETRY)


async def test_enabling_repairs_a_link_that_lost_its_filter(
    ns_client: httpx.AsyncClient, store: EntityStore, setup: str
) -> None:
    # The state a crash between "update the rule's filter" and "rewrite the link" leaves behind.
    ns = setup
    await put_rule(ns_client, "r", {"trigger": "/_/t", "action": "/_/a"})
    stored = await store.get(RULES, ns, "r")
    import msgspec

    await store.update(RULES, msgspec.structs.replace(stored.entity, filter=FILTER), stored.revision)
    assert "filter" not in (await trigger_rules(ns_client, "t"))[f"{ns}/r"]
    assert (await ns_client.post(rules("r"), json={"status": "active"})).status_code == 200
    assert (await trigger_rules(ns_client, "t"))[f"{ns}/r"]["filter"] == FILTER


async def test_the_openapi_document_describes_filter_and_retry(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/v1/api-docs")).json()
    put = document["paths"]["/api/v1/namespaces/{namespace}/rules/{name}"]["put"]
    ref = put["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = document["components"]["schemas"]
    body = schemas[ref.rsplit("/", 1)[1]]
    assert {"filter", "retry"} <= set(body["properties"])
    assert {"attempts", "delayMs", "backoff", "maxDelayMs", "on"} <= set(schemas["RetryPolicy"]["properties"])
    for view in ("RuleView", "RuleListItem"):
        assert {"filter", "retry"} <= set(schemas[view]["properties"])
        assert not {"filter", "retry"} & set(schemas[view].get("required", []))
