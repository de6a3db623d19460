"""Schemathesis against the served OpenAPI document on a live server: no 5xx, and answers as documented."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from api.server import ApiServer
from broker.activation_store import ActivationStore
from broker.activations import SUCCESS, Activation, make_response, new_activation_id
from broker.bus import JetStreamBus
from broker.codec import encode
from broker.entity_store import EntityStore
from runtimes.contract import RunOutcome, RunRequest
from runtimes.invoker import InvokerAgent
from tests.integration.conftest import basic

pytestmark = pytest.mark.slow

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# Entities the "existing" pass aims at, so handlers get past their 404 and fuzzed bodies hit updates.
# (collection segment, path parameter, value, how to (re)create it before each example)
SEED_ACTION = {"exec": {"kind": "python:default", "code": "def main(args):\n    return args\n"}}
EXISTING: tuple[tuple[str, str, str, dict[str, Any] | None], ...] = (
    ("packages", "name", "fz-pkg", {}),
    ("actions", "package", "fz-pkg", None),
    ("actions", "name", "fz-act", SEED_ACTION),
    ("triggers", "name", "fz-trg", {}),
    ("rules", "name", "fz-rule", {"trigger": "/_/fz-trg", "action": "/_/fz-act"}),
)

# (pass, mode, examples per operation). "own": `_` as namespace, generated names (mostly missing
# entities); "existing": `_` and the seeded entities; "foreign": generated namespaces, which mostly
# meet the 403 of another namespace (only operations with a `{namespace}`). Bounded to stay well
# under a minute.
PLAN: tuple[tuple[str, GenerationMode, int], ...] = (
    ("own", GenerationMode.POSITIVE, 40),
    ("own", GenerationMode.NEGATIVE, 40),
    ("existing", GenerationMode.POSITIVE, 25),
    ("foreign", GenerationMode.POSITIVE, 8),
)


class EchoPool:
    """Stands in for the container pool: the fuzzer tests the API, not the actions it creates."""

    async def run(self, request: RunRequest) -> RunOutcome:
        now = int(time.time() * 1000)
        value = request.run.value if isinstance(request.run.value, dict) else {}
        return RunOutcome(start=now, end=now, cold=False, status=200, body=encode(value))


@pytest.fixture
async def server(app: Starlette, bus: JetStreamBus, store: EntityStore) -> AsyncIterator[ApiServer]:
    # A real gateway and invoker agent (with a stand-in pool), so invoke is fuzzed past its 503.
    async with InvokerAgent(bus, store, EchoPool()), InvokeGateway(bus) as gateway:
        app_state(app).gateway = gateway
        # Fuzz only once the gateway sees the invoker's heartbeat: before that, 503 is the right answer.
        deadline = time.monotonic() + 10
        while not await gateway.registry.any_healthy():
            assert time.monotonic() < deadline, "the invoker never reported healthy"
            await asyncio.sleep(0.05)
        async with ApiServer(app, "127.0.0.1", 0) as running:
            yield running


@pytest.fixture
async def activation_id(namespace: tuple[str, str], activation_store: ActivationStore) -> str:
    """One stored activation in the namespace, for the activation read operations to find."""
    now = int(time.time() * 1000)
    record = Activation(
        namespace=namespace[0],
        name="fz-act",
        subject=namespace[0],
        activationId=new_activation_id(),
        start=now,
        end=now + 3,
        duration=3,
        response=make_response(SUCCESS, {"ok": True}),
        logs=["2026-01-01T00:00:00.000000Z   stdout: hi"],
        version="0.0.1",
        publish=False,
        annotations=[],
    )
    assert await activation_store.insert(record)
    return record.activationId


def fuzz_operation(run: Callable[[Case], None], strategy: Any, examples: int) -> None:
    # Derandomized and without an example database: the same cases every run, so CI is reproducible.
    # No shrinking: the first failing request (printed with a curl line) is what the report needs.
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def test(case: Case) -> None:
        run(case)

    test()


def targets(operation: APIOperation, pass_: str, activation_id: str) -> dict[str, str] | None:
    """The path parameters a pass fixes for an operation; None when the pass does not apply to it."""
    scoped = "{namespace}" in operation.path
    if pass_ == "foreign":
        return {} if scoped else None
    fixed = {"namespace": "_"} if scoped else {}
    if pass_ == "existing":
        for segment, param, value, _ in EXISTING:
            if f"/{segment}/{{{param}}}" in operation.path:
                fixed[param] = value
        if "{activationid}" in operation.path:
            fixed["activationid"] = activation_id
        if len(fixed) < 2:
            return None  # nothing seeded to aim at: the "own" pass already covers it
    return fixed


def seed(session: requests.Session, base_url: str) -> None:
    """(Re)create the seeded entities, since the fuzzed requests may delete or rewrite them."""
    for segment, _, value, body in EXISTING:
        if body is not None:
            url = f"{base_url}/api/v1/namespaces/_/{segment}/{value}?overwrite=true"
            response = session.put(url, json=body, timeout=10)
            assert response.status_code == 200, (url, response.status_code, response.text)


def fuzz(base_url: str, key: str, activation_id: str) -> list[str]:
    """Run the plan against the server; the failures, one readable paragraph each."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/api-docs", config=schemathesis.Config())
    session = requests.Session()
    session.headers.update(basic(key))
    failures: list[str] = []
    # A live activation stream never ends, so a fuzzed call could only time out: test_activation_stream.py
    # covers its parameters against a real server instead.
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if not op.path.endswith("/activations/stream")
    ]
    for pass_, mode, examples in PLAN:

        def run(case: Case, reseed: bool = pass_ == "existing") -> None:
            if reseed:
                seed(session, base_url)
            response = case.call(base_url=base_url, session=session, timeout=10)
            case.validate_response(response, checks=CHECKS, headers=dict(session.headers))

        for operation in operations:
            fixed = targets(operation, pass_, activation_id)
            if fixed is None:
                continue
            # Seeded entities exist, so without `overwrite` every PUT would just be the 409 of a create.
            overwrite = pass_ == "existing" and any(p.name == "overwrite" for p in operation.query)
            strategy = operation.as_strategy(
                generation_mode=mode,
                path_parameters=fixed or None,
                query={"overwrite": "true"} if overwrite else None,
            )
            try:
                fuzz_operation(run, strategy, examples)
            except Unsatisfiable:
                pass  # negative mode on an operation with no input to get wrong
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a Base one
                notes = "\n".join(getattr(exc, "__notes__", []))
                failures.append(f"[{pass_} {mode.value}] {operation.label}: {exc}\n{notes}")
    session.close()
    return failures


async def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    server: ApiServer, namespace: tuple[str, str], activation_id: str
) -> None:
    # The server runs on this event loop; the synchronous fuzzer gets a thread so the loop can serve it.
    failures = await asyncio.to_thread(fuzz, server.url, namespace[1], activation_id)
    assert not failures, f"{len(failures)} failing operation(s):\n\n" + "\n\n".join(failures)
