"""Retries and dead letters on real rootless Podman: an action that always raises is retried by its rule's
policy and dead-lettered; once the action is fixed, a redrive through the API runs it to success."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker import codec, subjects
from broker.activations import SUCCESS, annotation, new_activation_id
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.dead_letters import attempt_ids
from broker.health import now_ms
from broker.invocations import Invocation
from broker.retry_policy import RetryPolicy
from runtimes.podman_service import PodmanService
from tests.e2e.test_invoke import Squall, eventually, podman, squall_on

pytestmark = [pytest.mark.e2e]

__all__ = ["podman"]  # the module fixture of test_invoke: one Podman API service for this module

FAILING = "def main(args):\n    raise RuntimeError('always broken')\n"
FIXED = "def main(args):\n    return {'fixed': True, 'n': args.get('n')}\n"


@pytest.fixture(scope="module")
async def env(settings: Settings, podman: PodmanService) -> AsyncIterator[tuple[Squall, JetStreamBus]]:
    async with squall_on(settings) as running:
        yield running


async def test_an_always_failing_action_is_dead_lettered_then_redriven_after_a_fix(
    env: tuple[Squall, JetStreamBus],
) -> None:
    squall, bus = env
    ns = squall.namespace
    await squall.put("shaky", {"kind": "python:3.11", "code": FAILING})
    # As the rule engine publishes a rule's run of a trigger fire.
    invocation = Invocation(
        activationId=new_activation_id(),
        namespace=ns,
        action=f"{ns}/shaky",
        params={"n": 7},
        subject="e2e",
        cause=new_activation_id(),
        rule=f"{ns}/on-fire",
        trigger=f"{ns}/fire",
        retry=RetryPolicy(attempts=2, delayMs=100, backoff="fixed"),
        published=now_ms(),
    )
    await bus.publish(
        subjects.invoke_subject(ns, "shaky"), codec.encode(invocation), msg_id=invocation.activationId
    )
    url = f"/api/v1/namespaces/_/deadletters/{invocation.activationId}"
    letter: dict[str, object] = {}

    async def dead_lettered() -> bool:
        r = await squall.client.get(url)
        if r.status_code == 200:
            letter.update(r.json())
        return bool(letter)

    await eventually(dead_lettered, 120, "the dead letter")
    first, second = attempt_ids(invocation.activationId, 2)
    assert letter["attempts"] == 2 and letter["activationIds"] == [first, second]
    reason = letter["reason"]
    assert isinstance(reason, dict) and reason["status"] != SUCCESS and "always broken" in str(reason)
    for aid in (first, second):
        record = await squall.record(aid)
        assert record.response.status == reason["status"] and record.cause == invocation.cause
    assert annotation(await squall.record(second), "attempt") == 2

    r = await squall.client.put(
        "/api/v1/namespaces/_/actions/shaky",
        params={"overwrite": "true"},
        json={"exec": {"kind": "python:3.11", "code": FIXED}},
    )
    assert r.status_code == 200, r.text
    r = await squall.client.post(f"{url}/redrive")
    assert r.status_code == 202, r.text
    redriven = r.json()["activationId"]
    record = await squall.record(redriven, deadline_s=90)
    assert record.response.status == SUCCESS, record.response
    assert record.response.result == {"fixed": True, "n": 7} and record.cause == invocation.cause
    assert (await squall.client.get(url)).status_code == 404
    r = await squall.client.get("/api/v1/namespaces/_/deadletters", params={"count": "true"})
    assert r.json() == {"deadletters": 0}
