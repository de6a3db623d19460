"""Schemathesis' stateful mode over the entity routes: sequences of create → get → update → invoke/fire/enable →
delete on actions, triggers, rules and packages, following the OpenAPI links each PUT declares (api/openapi.py),
against a live server. No 5xx and no answer outside the document, derandomized and bounded."""

from __future__ import annotations

import asyncio
import collections
import re
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case

from api.server import ApiServer
from tests.integration.conftest import basic
from tests.integration.test_fuzz_api import CHECKS, server

pytestmark = pytest.mark.slow

__all__ = ["server"]  # the live server fixture of the stateless fuzzer

ENTITY_ROUTES = re.compile(r"^/api/v1/namespaces/\{namespace\}/(actions|triggers|rules|packages)(/|$)")
SCENARIOS = 60
STEPS = 8


def stateful_run(base_url: str, key: str) -> collections.Counter[str]:
    """Run the scenarios; how often each operation answered each status."""
    # Only the links the document declares: schemathesis' own inference would make the invoke/fire POSTs the
    # entry points of every scenario, and the creates (PUT) would never start one.
    config = schemathesis.Config.from_dict(
        {"generation": {"mode": "positive"}, "phases": {"stateful": {"inference": {"algorithms": []}}}}
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/api-docs", config=config)
    schema = schema.include(path_regex=ENTITY_ROUTES.pattern)
    session = requests.Session()
    session.headers.update(basic(key))
    seen: collections.Counter[str] = collections.Counter()
    machine = schema.as_state_machine()
    links = sum(
        len(response.get("links", {}))
        for item in schema.raw_schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for response in op.get("responses", {}).values()
        if isinstance(response, dict)
    )
    assert links >= 4 * 3, f"the entity PUTs declare too few links ({links}) for a stateful run"

    def wipe() -> None:
        """Delete every entity of the namespace: each scenario starts from the same (empty) state, which
        Hypothesis needs to replay a scenario the same way. Packages go last, with their actions (`force`)."""
        api = f"{base_url}/api/v1/namespaces/_"
        for collection in ("rules", "triggers", "actions", "packages"):
            for item in session.get(f"{api}/{collection}", params={"limit": 200}, timeout=10).json():
                session.delete(f"{api}/{collection}/{item['name']}", params={"force": "true"}, timeout=10)

    class EntityMachine(machine):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            wipe()

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            # Every path stays in the caller's own namespace: `_`, so that sequences meet their own entities.
            if "namespace" in (case.path_parameters or {}):
                case.path_parameters["namespace"] = "_"
            # The tenant's own key on every step (the stateless fuzzer covers made-up credentials).
            if case.headers:
                case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
            return {"base_url": base_url, "session": session, "timeout": 10}

        def after_call(self, response: Any, case: Case) -> None:
            super().after_call(response, case)
            seen[f"{case.operation.label} {response.status_code}"] += 1

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=dict(session.headers))

    EntityMachine.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
    )
    session.close()
    return seen


async def test_stateful_fuzzing_of_the_entity_routes_finds_no_server_error(
    server: ApiServer, namespace: tuple[str, str]
) -> None:
    seen = await asyncio.to_thread(stateful_run, server.url, namespace[1])
    # The links were followed: entities made by a PUT were read or deleted (a made-up name would be a 404).
    # Random bodies rarely make a valid action (the document does not list the runtime kinds) or rule (its
    # trigger and action must exist), so those chains mostly meet the 400 of their create; which of the trigger
    # and package chains get past their create depends on the examples drawn, so the two count together.
    followed = sum(
        seen[f"{method} /api/v1/namespaces/{{namespace}}/{collection}/{{name}} 200"]
        for collection in ("triggers", "packages")
        for method in ("GET", "DELETE")
    )
    assert followed > 0, "\n".join(f"{k}: {v}" for k, v in sorted(seen.items()))
