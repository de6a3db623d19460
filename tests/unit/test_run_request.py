"""The invoker's request to the pool: OpenWhisk's /init and /run bodies, `__OW_*` values, pool keys (pure)."""

from __future__ import annotations

from typing import Any

from broker.entities import Action, ActionLimits, Exec, KeyValue
from broker.invocations import Invocation
from broker.key_seal import KeySeal, new_secret
from runtimes.invoker import pool_key, run_request, split_arguments

NOW = 1_700_000_000_000
AID = "0123456789abcdef0123456789abcdef"
KEY = "uuid:secret"
SEAL = KeySeal(new_secret())


def action(**overrides: Any) -> Action:
    fields: dict[str, Any] = {
        "namespace": "guest/pkg",
        "name": "hello",
        "version": "0.0.2",
        "exec": Exec(kind="nodejs:18", code="UEsDBA==", binary=True, main="run"),
        "limits": ActionLimits(timeout=5000, memory=128, logs=2),
        "annotations": [KeyValue(key="provide-api-key", value=True)],
    }
    fields.update(overrides)
    return Action(**fields)


def invocation(**overrides: Any) -> Invocation:
    fields: dict[str, Any] = {
        "activationId": AID,
        "namespace": "guest",
        "action": "guest/pkg/hello",
        "sealed_api_key": SEAL.seal(KEY, "guest"),
        "transaction_id": "tx-1",
    }
    fields.update(overrides)
    return Invocation(**fields)


def test_run_and_init_bodies_carry_openwhisk_values() -> None:
    req = run_request(
        invocation(), action(), 7, {"x": 1}, api_host="http://127.0.0.1:3233", now=NOW, seal=SEAL
    )
    assert req.kind == "nodejs:18" and req.memory_mb == 128 and req.timeout_ms == 5000
    assert req.log_limit_bytes == 2 * 1024 * 1024
    run = req.run
    assert run.value == {"x": 1}
    assert (run.namespace, run.action_name, run.action_version) == ("guest", "/guest/pkg/hello", "0.0.2")
    assert (run.activation_id, run.transaction_id, run.deadline, run.api_key) == (
        AID,
        "tx-1",
        str(NOW + 5000),
        KEY,
    )
    init = req.init
    assert (init.name, init.main, init.code, init.binary) == ("hello", "run", "UEsDBA==", True)
    assert init.env == {
        "__OW_NAMESPACE": "guest",
        "__OW_ACTION_NAME": "/guest/pkg/hello",
        "__OW_ACTION_VERSION": "0.0.2",
        "__OW_ACTIVATION_ID": AID,
        "__OW_TRANSACTION_ID": "tx-1",
        "__OW_DEADLINE": str(NOW + 5000),
        "__OW_API_KEY": KEY,
        "__OW_API_HOST": "http://127.0.0.1:3233",
    }


def test_the_api_key_is_given_only_to_actions_that_ask() -> None:
    denied = action(annotations=[KeyValue(key="provide-api-key", value=False)])
    req = run_request(invocation(), denied, 1, {}, now=NOW, seal=SEAL)
    assert req.run.api_key is None and "__OW_API_KEY" not in req.init.env
    # OpenWhisk reads a missing annotation as "provide" (new actions get `false` from the API).
    req = run_request(invocation(), action(annotations=[]), 1, {}, now=NOW, seal=SEAL)
    assert req.run.api_key == KEY
    req = run_request(invocation(sealed_api_key=None), action(), 1, {}, now=NOW, seal=SEAL)
    assert req.run.api_key is None and "__OW_API_KEY" not in req.init.env


def test_another_namespaces_action_never_gets_the_callers_key() -> None:
    shared = action(namespace="publisher/pkg")
    req = run_request(invocation(action="publisher/pkg/hello"), shared, 1, {}, now=NOW, seal=SEAL)
    assert req.run.api_key is None and "__OW_API_KEY" not in req.init.env


def test_a_key_opens_only_with_the_secret_and_for_the_namespace_it_was_sealed_for() -> None:
    req = run_request(invocation(), action(), 1, {}, now=NOW)  # an invoker without the secret
    assert req.run.api_key is None
    req = run_request(invocation(), action(), 1, {}, now=NOW, seal=KeySeal(new_secret()))
    assert req.run.api_key is None
    moved = invocation(sealed_api_key=SEAL.seal(KEY, "other"))  # copied from another namespace's run
    assert run_request(moved, action(), 1, {}, now=NOW, seal=SEAL).run.api_key is None
    plaintext = invocation(sealed_api_key=KEY)  # as an earlier version stored it
    assert run_request(plaintext, action(), 1, {}, now=NOW, seal=SEAL).run.api_key is None


def test_defaults_when_exec_has_no_main_and_the_transaction_is_unknown() -> None:
    plain = action(exec=Exec(kind="python:3.11", code="def main(a): return a", binary=False))
    req = run_request(invocation(transaction_id=""), plain, 1, {}, now=NOW)
    assert req.init.main == "main" and req.init.binary is False
    assert req.run.transaction_id == AID


def test_init_parameters_go_to_the_environment_not_to_the_run() -> None:
    with_init = action(
        parameters=[KeyValue(key="secret", value="s", init=True), KeyValue(key="n", value=3, init=True)]
    )
    env, value = split_arguments({"secret": "s", "n": 3, "x": 1}, with_init)
    assert env == {"secret": "s", "n": "3"} and value == {"x": 1}
    req = run_request(invocation(), with_init, 1, {"secret": "s", "n": 3, "x": 1}, now=NOW)
    assert req.run.value == {"x": 1}
    assert req.init.env["secret"] == "s" and req.init.env["n"] == "3"
    # Without init parameters, an array input passes unchanged.
    assert split_arguments([1, 2], action()) == ({}, [1, 2])


def test_pool_key_separates_revisions_and_invoking_namespaces() -> None:
    a = action()
    assert pool_key(a, 7, "guest") == "guest/pkg/hello@7"
    assert pool_key(a, 8, "guest") != pool_key(a, 7, "guest")
    assert pool_key(a, 7, "other") == "guest/pkg/hello@7#other"


def test_an_invoker_takes_as_many_runs_as_default_containers_fit_beside_its_stem_cells() -> None:
    from runtimes.invoker import concurrency

    assert concurrency(2048, 2, 256) == 6
    assert concurrency(2048, 0, 256) == 8
    assert concurrency(512, 2, 256) == 2  # never fewer than two
