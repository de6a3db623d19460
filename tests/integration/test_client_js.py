"""The OpenWhisk JavaScript client (npm `openwhisk`) against a live Squall API: `tests/compat/client_js.js`.

The API runs alone, except for the `triggers` group: firing needs the invoke gateway, and the fired trigger's
records are read back through the client, so that group also runs the rule engine, the activation recorder
and an invoker with a stand-in pool that echoes its arguments (as tests/integration/test_fire.py does).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from api.context import app_state
from api.gateway import InvokeGateway
from api.server import ApiServer
from broker.activation_store import ActivationStore
from broker.activations import APPLICATION_ERROR, SUCCESS, Activation, make_response, new_activation_id
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entities import KeyValue
from broker.entity_store import EntityStore
from broker.recorder import ActivationRecorder
from broker.rule_engine import RuleEngine
from runtimes.invoker import InvokerAgent
from tests.integration.test_fuzz_api import EchoPool

COMPAT = Path(__file__).resolve().parent.parent / "compat"
SCRIPT = COMPAT / "client_js.js"
STAMP = COMPAT / "node_modules" / ".squall-package-json.sha256"
GROUPS = ("namespaces", "packages", "triggers", "rules", "actions", "activations", "errors")

# The client reads these from the environment; a proxy or a stray setting from the machine must not
# redirect or alter its requests to the loopback server.
_CLIENT_ENV = (
    "PROXY",
    "proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
)

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the OpenWhisk JavaScript client",
)


def ensure_client() -> None:
    """`npm install` in tests/compat, only when node_modules is missing or package.json changed."""
    wanted = hashlib.sha256((COMPAT / "package.json").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == wanted:
        return
    # npm uses its configured registry; tests/compat/.npmrc turns off the lockfile, audit and funding.
    done = subprocess.run(
        ["npm", "install", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=COMPAT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm install failed in {COMPAT}:\n{done.stdout}\n{done.stderr}"
    STAMP.write_text(wanted + "\n")


@pytest.fixture(scope="session")
def client_installed() -> None:
    ensure_client()


@pytest.fixture
async def server(app: Starlette) -> AsyncIterator[ApiServer]:
    async with ApiServer(app, "127.0.0.1", 0) as running:
        yield running


@contextlib.asynccontextmanager
async def firing_platform(
    app: Starlette,
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    settings: Settings,
) -> AsyncIterator[None]:
    """What a fire needs beyond the API: the gateway (without it a fire is 503), the rule engine, an invoker
    and the recorder, so the trigger's record and its rule's run can be read back."""
    async with (
        InvokerAgent(bus, store, EchoPool()),
        InvokeGateway(bus) as gateway,
        RuleEngine(bus, store, settings),
        ActivationRecorder(bus, activation_store),
    ):
        app_state(app).gateway = gateway
        yield


def seeded_records(namespace: str) -> list[Activation]:
    """Activations as an invoker would have stored them: there is no invoker in this suite."""
    now = int(time.time() * 1000)
    outcomes = [
        (SUCCESS, {"payload": "Hello, World"}, ["2026-01-01T00:00:00.000000Z   stdout: hello"]),
        (APPLICATION_ERROR, {"error": "no"}, []),
    ]
    return [
        Activation(
            namespace=namespace,
            name="hello",
            subject=namespace,
            activationId=new_activation_id(),
            start=now - 1000 * i,
            end=now - 1000 * i + 5,
            duration=5,
            response=make_response(status, result),
            logs=logs,
            version="0.0.1",
            publish=False,
            annotations=[KeyValue(key="path", value=f"{namespace}/hello")],
        )
        for i, (status, result, logs) in enumerate(outcomes)
    ]


async def run_script(
    server: ApiServer, namespace: str, key: str, group: str, extra_env: dict[str, str]
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV and not k.startswith("__OW_")}
    env |= {"__OW_API_HOST": server.url, "__OW_API_KEY": key, "__OW_NAMESPACE": namespace} | extra_env
    # An asyncio subprocess, so this event loop keeps serving the API while node talks to it.
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        group,
        cwd=COMPAT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize("group", GROUPS)
async def test_openwhisk_js_client(
    client_installed: None,
    app: Starlette,
    server: ApiServer,
    namespace: tuple[str, str],
    bus: JetStreamBus,
    store: EntityStore,
    activation_store: ActivationStore,
    settings: Settings,
    group: str,
) -> None:
    extra_env = {}
    if group == "activations":
        records = seeded_records(namespace[0])
        assert await activation_store.insert_many(records) == len(records)
        extra_env["COMPAT_ACTIVATIONS"] = str(len(records))
    async with contextlib.AsyncExitStack() as stack:
        if group == "triggers":
            await stack.enter_async_context(firing_platform(app, bus, store, activation_store, settings))
            extra_env["COMPAT_RULE_ENGINE"] = "1"
        code, out, err = await run_script(server, namespace[0], namespace[1], group, extra_env)
    lines = out.splitlines()
    failing = [line for line in lines if line.startswith("not ok")]
    passing = [line for line in lines if line.startswith("ok - ")]
    assert not failing, f"{len(failing)} client-js check(s) failed:\n" + "\n".join(failing) + f"\n{err}"
    assert code == 0, f"node exited {code}:\n{out}\n{err}"
    assert passing, f"no check ran:\n{out}\n{err}"
    assert lines[-1] == f"{len(passing)} passed, 0 failed"
    if group == "triggers":
        fired = [line for line in passing if "triggers.invoke" in line or "trigger activation" in line]
        assert len(fired) == 5, "the fire checks, the record's read back included:\n" + out
