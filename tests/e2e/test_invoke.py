"""Invoking through the API with invoker agents on real rootless Podman: Python and Node.js actions as OpenWhisk
writes them, their environment, keys, sequences, statuses, timeouts; and two invoker processes, one SIGKILLed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.context import app_state
from api.gateway import InvokeGateway
from api.routes import invoke, invokers
from broker import subjects
from broker.activation_store import ActivationStore
from broker.activations import Activation
from broker.admin import create_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import NotFound
from broker.health import Heartbeat, read_heartbeats
from broker.recorder import ActivationRecorder
from runtimes.invoker import invoker_role
from runtimes.podman_service import PodmanService
from squall.embedded import EmbeddedMongo, EmbeddedNats
from tests.conditions import eventually

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def with_routes(app: Starlette) -> Starlette:
    present = {id(getattr(r, "endpoint", None)) for r in app.router.routes}
    app.router.routes.extend(r for r in (*invoke.routes, *invokers.routes) if id(r.endpoint) not in present)
    return app


class Squall:
    """The API (in process), an activation recorder and an invoker, over one NATS and one MongoDB."""

    def __init__(self, client: httpx.AsyncClient, namespace: str, key: str, store: ActivationStore) -> None:
        self.client = client
        self.namespace = namespace
        self.key = key
        self.store = store

    async def put(self, name: str, exec: dict[str, Any], **extra: Any) -> None:
        r = await self.client.put(f"/api/v1/namespaces/_/actions/{name}", json={"exec": exec, **extra})
        assert r.status_code == 200, r.text

    async def invoke(self, name: str, body: Any = None, **query: str) -> httpx.Response:
        query.setdefault("blocking", "true")
        return await self.client.post(f"/api/v1/namespaces/_/actions/{name}", json=body, params=query)

    async def record(self, aid: str, deadline_s: float = 15.0) -> Activation:
        found: list[Activation] = []

        async def stored() -> bool:
            with contextlib.suppress(NotFound):
                found.append(await self.store.get(self.namespace, aid))
            return bool(found)

        await eventually(stored, deadline_s, f"activation {aid} in MongoDB")
        return found[0]


@contextlib.asynccontextmanager
async def squall_on(
    settings: Settings, *, invoker: bool = True
) -> AsyncIterator[tuple[Squall, JetStreamBus]]:
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(JetStreamBus(settings))
        await bus.provision()
        entities = EntityStore(bus)
        activations = await stack.enter_async_context(ActivationStore.from_settings(settings))
        await activations.provision()
        await stack.enter_async_context(ActivationRecorder(bus, activations))
        app = with_routes(create_app(settings, entities, activations))
        app_state(app).gateway = await stack.enter_async_context(InvokeGateway(bus))
        if invoker:
            await stack.enter_async_context(invoker_role(settings, bus, entities))
        namespace = f"e2e-{uuid.uuid4().hex[:8]}"
        key = await create_namespace(entities, namespace)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://squall", headers=basic(key), timeout=90)
        )
        yield Squall(client, namespace, key, activations), bus


@pytest.fixture(scope="module")
async def podman(settings: Settings) -> AsyncIterator[PodmanService]:
    """One Podman API service for the module: invoker processes reuse it, and a killed one cannot take it down."""
    async with PodmanService(settings) as service:
        yield service


@pytest.fixture(scope="module")
async def squall(settings: Settings, podman: PodmanService) -> AsyncIterator[Squall]:
    async with squall_on(settings) as (env, _):
        yield env


def notes(record: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a.get("value") for a in record["annotations"]}


# -- Python ------------------------------------------------------------------------------------------------

PY_ENV = """
import os, sys
def main(args):
    print("to stdout", args.get("name"))
    print("to stderr", file=sys.stderr)
    return {"hello": args.get("name"), "env": {k: v for k, v in os.environ.items() if k.startswith("__OW_")}}
"""


async def test_python_action_with_openwhisk_environment_logs_and_record(squall: Squall) -> None:
    await squall.put(
        "py", {"kind": "python:default", "code": PY_ENV}, parameters=[{"key": "name", "value": "x"}]
    )
    r = await squall.invoke("py", {"name": "world"})
    assert r.status_code == 200, r.text
    record = r.json()
    result = record["response"]["result"]
    assert result["hello"] == "world"
    env = result["env"]
    assert env["__OW_NAMESPACE"] == squall.namespace
    assert env["__OW_ACTION_NAME"] == f"/{squall.namespace}/py"
    assert env["__OW_ACTION_VERSION"] == "0.0.1"
    assert env["__OW_ACTIVATION_ID"] == record["activationId"]
    assert int(env["__OW_DEADLINE"]) > record["start"]
    assert env["__OW_API_HOST"].startswith("http://")
    assert "__OW_API_KEY" not in env  # provide-api-key is false for new actions
    assert record["logs"] == []  # OpenWhisk answers before it collects the logs; the stored record has them
    stored = await squall.record(record["activationId"])
    assert [line.split(" ", 1)[1].strip() for line in stored.logs] == [
        "stdout: to stdout world",
        "stderr: to stderr",
    ]
    meta = notes(record)
    assert (
        meta["kind"] == "python:3.11"
        and meta["path"] == f"{squall.namespace}/py"
        and meta["timeout"] is False
    )
    # The second run is warm: no initTime.
    again = (await squall.invoke("py", {"name": "again"})).json()
    assert "initTime" not in notes(again) and again["response"]["result"]["hello"] == "again"
    assert stored.response.result == result


async def test_python_zip_with_main_module_helper_and_virtualenv(squall: Squall) -> None:
    code = zipped(
        {
            "__main__.py": "import helper, extra\ndef start(args):\n    return {'from': helper.NAME, 'extra': extra.VALUE}\n",
            "helper.py": "NAME = 'helper'\n",
            "virtualenv/lib/python3.11/site-packages/extra.py": "VALUE = 42\n",
        }
    )
    await squall.put("pyzip", {"kind": "python:3.11", "code": code, "main": "start"})
    r = await squall.invoke("pyzip", result="true")
    assert r.status_code == 200, r.text
    assert r.json() == {"from": "helper", "extra": 42}


async def test_a_zip_action_of_several_megabytes_is_stored_and_runs(squall: Squall) -> None:
    # Random bytes do not compress: about 4 MB of base64, four times what one KV value (one NATS message) holds.
    blob = base64.b64encode(os.urandom(3 * 1024 * 1024)).decode()
    code = zipped(
        {
            "__main__.py": "import data\ndef main(args):\n    return {'size': len(data.BLOB)}\n",
            "data.py": f"BLOB = '{blob}'\n",
        }
    )
    assert len(code) > 4 * 1024 * 1024
    await squall.put("bigzip", {"kind": "python:3.11", "code": code})
    r = await squall.invoke("bigzip", result="true")
    assert r.status_code == 200, r.text
    assert r.json() == {"size": len(blob)}


# -- Node.js -----------------------------------------------------------------------------------------------


async def test_node_actions_plain_promise_exports_and_zip(squall: Squall) -> None:
    await squall.put(
        "plain", {"kind": "nodejs:default", "code": "function main(p) { return {twice: p.n * 2} }"}
    )
    await squall.put(
        "promise",
        {
            "kind": "nodejs:18",
            "code": "function main(p) { return new Promise(r => setTimeout(() => r({later: p.n}), 20)) }",
        },
    )
    await squall.put(
        "exported",
        {"kind": "nodejs:18", "code": "module.exports.main = (p) => ({ns: process.env.__OW_NAMESPACE})"},
    )
    code = zipped(
        {
            "package.json": '{"name": "z", "main": "lib/entry.js"}',
            "lib/entry.js": "const h = require('./helper'); exports.main = (p) => ({zip: h.word})",
            "lib/helper.js": "exports.word = 'zipped'",
        }
    )
    await squall.put("nodezip", {"kind": "nodejs:18", "code": code})
    assert (await squall.invoke("plain", {"n": 21}, result="true")).json() == {"twice": 42}
    assert (await squall.invoke("promise", {"n": 7}, result="true")).json() == {"later": 7}
    assert (await squall.invoke("exported", result="true")).json() == {"ns": squall.namespace}
    assert (await squall.invoke("nodezip", result="true")).json() == {"zip": "zipped"}


async def test_the_api_key_is_provided_only_when_asked(squall: Squall) -> None:
    code = "function main() { return {key: process.env.__OW_API_KEY || null} }"
    await squall.put(
        "withkey",
        {"kind": "nodejs:18", "code": code},
        annotations=[{"key": "provide-api-key", "value": True}],
    )
    await squall.put("nokey", {"kind": "nodejs:18", "code": code})
    assert (await squall.invoke("withkey", result="true")).json() == {"key": squall.key}
    assert (await squall.invoke("nokey", result="true")).json() == {"key": None}


# -- sequences and statuses ----------------------------------------------------------------------------------


async def test_a_sequence_across_runtimes(squall: Squall) -> None:
    ns = squall.namespace
    await squall.put(
        "split", {"kind": "python:3.11", "code": "def main(a):\n    return {'words': a['text'].split()}\n"}
    )
    await squall.put(
        "count", {"kind": "nodejs:18", "code": "function main(p) { return {count: p.words.length} }"}
    )
    await squall.put("seq", {"kind": "sequence", "components": [f"/{ns}/split", f"/{ns}/count"]})
    r = await squall.invoke("seq", {"text": "a b c d"})
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["response"]["result"] == {"count": 4}
    assert notes(record)["topmost"] is True and notes(record)["kind"] == "sequence"
    split, count = [await squall.record(aid) for aid in record["logs"]]
    assert split.response.result == {"words": ["a", "b", "c", "d"]}
    assert split.cause == count.cause == record["activationId"]
    assert all(
        next(a.value for a in c.annotations if a.key == "causedBy") == "sequence" for c in (split, count)
    )


async def test_statuses_of_failures(squall: Squall) -> None:
    await squall.put(
        "apperr", {"kind": "python:3.11", "code": "def main(a):\n    return {'error': 'nope'}\n"}
    )
    await squall.put("initerr", {"kind": "python:3.11", "code": "def main(a) syntax error"})
    await squall.put("notdict", {"kind": "nodejs:18", "code": "function main() { return 'a string' }"})
    r = await squall.invoke("apperr")
    assert r.status_code == 502 and r.json()["response"]["status"] == "application error"
    assert r.json()["response"]["result"] == {"error": "nope"}
    r = await squall.invoke("initerr")
    assert r.status_code == 502 and r.json()["response"]["status"] == "action developer error"
    assert "initTime" not in notes(r.json()) or notes(r.json())["initTime"] >= 0
    r = await squall.invoke("notdict")
    assert r.status_code == 502 and r.json()["response"]["status"] == "action developer error"


async def test_a_5_mb_result_is_refused_and_an_infinite_loop_times_out(squall: Squall) -> None:
    await squall.put(
        "big", {"kind": "python:3.11", "code": "def main(a):\n    return {'big': 'x' * 5_000_000}\n"}
    )
    r = await squall.invoke("big")
    assert r.status_code == 502
    assert r.json()["response"]["status"] == "application error"
    message = r.json()["response"]["result"]["error"]
    assert message.startswith("The action produced a response that exceeded the allowed length: ")
    assert "> 1048576 bytes. The truncated response was: {" in message
    # Quoted up to the limit, as OpenWhisk does: a record past one NATS message, read back for this answer.
    assert len(message.partition("The truncated response was: ")[2]) == 1024 * 1024
    loop = "def main(a):\n    if a.get('spin'):\n        while True:\n            pass\n    return {'ok': True}\n"
    await squall.put("loop", {"kind": "python:3.11", "code": loop}, limits={"timeout": 1000})
    assert (await squall.invoke("loop", result="true")).json() == {"ok": True}
    started = time.monotonic()
    r = await squall.invoke("loop", {"spin": True})
    assert 0.9 < time.monotonic() - started < 10
    assert r.status_code == 502
    assert r.json()["response"]["result"] == {
        "error": "The action exceeded its time limits of 1000 milliseconds."
    }
    assert notes(r.json())["timeout"] is True
    r = await squall.invoke("loop", result="true")
    assert r.status_code == 200 and r.json() == {"ok": True}


async def test_a_log_flood_is_truncated_with_openwhisks_notice(squall: Squall) -> None:
    flood = "def main(a):\n    for _ in range(20000):\n        print('y' * 199)\n    return {'done': True}\n"
    await squall.put("flood", {"kind": "python:3.11", "code": flood}, limits={"logs": 1})
    r = await squall.invoke("flood")
    assert r.status_code == 200, r.text
    logs = (await squall.record(r.json()["activationId"])).logs  # the blocking answer has none
    # The action's own limit: NATS's max_payload (1 MB) bounds no record (broker/large_records.py).
    assert logs[-1].endswith(
        "stderr: Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes."
    )
    assert sum(len(line) for line in logs) <= 1024 * 1024 + 1000


async def test_invokers_report_up(squall: Squall) -> None:
    r = await squall.client.get("/invokers")
    assert r.status_code == 200 and "up" in r.json().values()


# -- scale-out: two invoker processes, one SIGKILLed -----------------------------------------------------------

INVOKER_PROCESS = """
import asyncio
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from runtimes.invoker import InvokerAgent, pool_load
from runtimes.pool import ContainerPool, PoolSettings

async def main():
    settings = Settings.from_env()
    async with JetStreamBus(settings) as bus, ContainerPool(settings, config=PoolSettings(prewarm="python:2")) as pool:
        async with InvokerAgent(bus, EntityStore(bus), pool, ack_wait_s=3.0, max_in_flight=6,
                                load=lambda: pool_load(pool.stats())):
            print("ready", flush=True)
            await asyncio.Event().wait()

asyncio.run(main())
"""


def start_invoker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SQUALL_NATS_URL": settings.nats_url,
        "SQUALL_MONGODB_URI": settings.mongodb_uri,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(INVOKER_PROCESS)], env=env, cwd=ROOT, stdout=subprocess.PIPE
    )


async def heartbeat(bus: JetStreamBus, pid: int) -> Heartbeat:
    """The last heartbeat of the invoker process `pid` (its id ends with the pid)."""
    for beat in await read_heartbeats(bus):
        if beat.id.endswith(f"-{pid}"):
            return beat
    return Heartbeat(id="")


async def test_two_invoker_processes_share_the_load_and_a_sigkill_loses_nothing(
    podman: PodmanService, tmp_path: Path
) -> None:
    # A NATS and a MongoDB of its own: only these two invokers may take this work.
    async with EmbeddedNats(tmp_path / "nats") as nats, EmbeddedMongo(tmp_path / "mongo") as mongo:
        settings = Settings(nats_url=nats.url, mongodb_uri=mongo.uri, data_dir=tmp_path)
        async with squall_on(settings, invoker=False) as (env, bus):
            first, second = start_invoker(settings), start_invoker(settings)
            try:
                for process in (first, second):
                    assert process.stdout is not None
                    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
                    assert line.strip() == b"ready"
                code = "import time\ndef main(a):\n    time.sleep(0.3)\n    return {'n': a['n']}\n"
                await env.put("work", {"kind": "python:3.11", "code": code})
                n = 150
                replies = await asyncio.gather(
                    *(env.invoke("work", {"n": i}, blocking="false") for i in range(n))
                )
                assert all(r.status_code == 202 for r in replies)
                ids = {r.json()["activationId"] for r in replies}

                async def both_busy() -> bool:
                    one, two = await heartbeat(bus, first.pid), await heartbeat(bus, second.pid)
                    return one.completed > 0 and two.completed > 0 and one.in_flight > 0

                await eventually(both_busy, 60, "both invokers to have completed work, the first busy")
                first.send_signal(signal.SIGKILL)
                first.wait(10)

                async def all_stored() -> bool:
                    return await env.store.count(env.namespace) >= n

                await eventually(all_stored, 90, f"{n} activations stored")
                records = await env.store.list(env.namespace, limit=200)
                assert {r.activationId for r in records} == ids
                assert all(r.response.result == {"n": r.response.result["n"]} for r in records)
                # Exactly once: one record per activation on the stream too (a redelivered run that had
                # published before the kill is dropped by the message id).
                info = await bus.js.stream_info(subjects.ACTIVATIONS_STREAM)
                assert info.state.messages == n
                killed, survivor = await heartbeat(bus, first.pid), await heartbeat(bus, second.pid)
                assert killed.completed > 0 and survivor.completed > 0
            finally:
                for process in (first, second):
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)  # asyncio.run cancels: the agent and pool drain
                        try:
                            process.wait(20)
                        except subprocess.TimeoutExpired:
                            process.kill()
                            process.wait()
