"""The whisk.system catalog on a real `squall standalone` (rootless Podman, the Node.js runtime), used as the
guest namespace uses it: every catalog action's output against OpenWhisk's documented one, invoked directly,
through a binding, in a sequence and by a rule; and the OpenWhisk JavaScript client's catalog checks."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from broker.config import GUEST_KEY
from tests.e2e.test_fire_standalone import fire, put, record
from tests.e2e.test_standalone import Standalone, free_port
from tests.integration.test_client_js import _CLIENT_ENV, COMPAT, SCRIPT, ensure_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUEST_USER, _, GUEST_SECRET = GUEST_KEY.partition(":")
SYS = "/api/v1/namespaces/whisk.system"


@dataclass(frozen=True, slots=True)
class Catalog:
    api: httpx.Client
    url: str  # the API's address, what actions get as __OW_API_HOST


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """One standalone for the module (it installs the catalog at boot), and a guest client on it."""
    workdir = tmp_path_factory.mktemp("catalog-standalone")
    standalone = Standalone(workdir / "data", free_port(), workdir / "standalone.log")
    try:
        standalone.wait_ready()
        with httpx.Client(base_url=standalone.url, auth=(GUEST_USER, GUEST_SECRET), timeout=60) as client:
            yield Catalog(client, standalone.url)
    finally:
        standalone.stop()
    assert standalone.proc.returncode == 0, standalone.output()


def invoke(api: httpx.Client, path: str, payload: dict[str, Any], status: int = 200) -> Any:
    """A blocking invoke answering the result alone, as `wsk action invoke -r` does."""
    r = api.post(f"{path}", params={"blocking": "true", "result": "true"}, json=payload)
    assert r.status_code == status, f"{path}: {r.status_code} {r.text}"
    return r.json()


def utils(action: str) -> str:
    return f"{SYS}/actions/utils/{action}"


# Each case: (action, payload, the result OpenWhisk's catalog documents or its code answers).
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("utils/echo", {"payload": "Five fuzzy felines"}, {"payload": "Five fuzzy felines"}),
    ("utils/cat", {"lines": [4, 2, 3]}, {"lines": [4, 2, 3], "payload": "4\n2\n3"}),
    ("utils/cat", {}, {"lines": [], "payload": ""}),
    (
        "utils/smash",
        {"a": 1, "b": {"c": 2, "d": 3}, "$fieldName": "p"},
        {"p": {"a": 1, "b": {"c": 2, "d": 3}}},
    ),
    (
        "utils/split",
        {"payload": "one,two,three", "separator": ","},
        {"lines": ["one", "two", "three"], "payload": "one,two,three"},
    ),
    ("utils/split", {"payload": "a\nb\r\nc"}, {"lines": ["a", "b", "c"], "payload": "a\nb\r\nc"}),
    ("utils/sort", {"lines": [4, 2, 3]}, {"lines": [2, 3, 4], "length": 3}),
    # JavaScript's default sort compares strings: "10" before "9", upper case before lower.
    ("utils/sort", {"lines": ["b", "a", "10", "9", "B"]}, {"lines": ["10", "9", "B", "a", "b"], "length": 5}),
    ("utils/head", {"lines": [4, 2, 3], "num": 2}, {"lines": [4, 2], "num": 2}),
    ("utils/head", {"lines": [4, 2, 3]}, {"lines": [4], "num": 1}),
    ("utils/namespace", {}, {"namespace": "guest"}),
    ("samples/hello", {"payload": "Cat"}, {}),
    (
        "samples/greeting",
        {"payload": "Cat", "place": "Narrowsburg"},
        {"payload": "Hello, Cat from Narrowsburg!"},
    ),
    ("samples/greeting", {}, {"payload": "Hello, stranger from somewhere!"}),
    ("samples/wordcount", {"payload": "Five fuzzy felines"}, {"count": 3}),
]


@pytest.mark.parametrize(
    ("action", "payload", "result"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_catalog_action_answers_as_openwhisk(
    catalog: Catalog, action: str, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    assert invoke(catalog.api, f"{SYS}/actions/{action}", payload) == result


def test_date_is_now_in_iso_8601(catalog: Catalog) -> None:
    answer = invoke(catalog.api, utils("date"), {})
    assert set(answer) == {"date"}
    when = datetime.datetime.fromisoformat(answer["date"].replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 60


def test_hosturl_builds_the_invoking_namespaces_urls(catalog: Catalog) -> None:
    api, base = catalog.api, catalog.url
    assert invoke(api, utils("hosturl"), {"path": "hello"}) == {
        "url": f"{base}/api/v1/namespaces/guest/actions/hello"
    }
    assert invoke(api, utils("hosturl"), {"trigger": True, "path": "t"}) == {
        "url": f"{base}/api/v1/namespaces/guest/triggers/t"
    }
    assert invoke(api, utils("hosturl"), {"web": True, "path": "utils/echo"}) == {
        "url": f"{base}/api/v1/web/guest/utils/echo.json"
    }
    assert invoke(api, utils("hosturl"), {"web": True, "path": "hi", "ext": ".http"}) == {
        "url": f"{base}/api/v1/web/guest/default/hi.http"
    }
    assert invoke(api, utils("hosturl"), {}) == {"url": f"{base}/api/v1/namespaces/guest/actions"}
    refused = invoke(api, utils("hosturl"), {"web": True, "trigger": True}, status=502)
    assert refused == {"error": "triggers are not allowed for web actions."}
    refused = invoke(api, utils("hosturl"), {"trigger": True, "path": "p/t"}, status=502)
    assert refused == {"error": "triggers are not allowed in packages."}


def test_smash_without_a_field_name_is_an_application_error(catalog: Catalog) -> None:
    answer = invoke(catalog.api, utils("smash"), {"a": 1}, status=502)
    assert answer == {"error": "Expected an argument '$fieldName' of type 'string'."}


def test_hello_logs_its_greeting(catalog: Catalog) -> None:
    r = catalog.api.post(f"{SYS}/actions/samples/hello", params={"blocking": "true"}, json={"payload": "Cat"})
    assert r.status_code == 200, r.text
    activation = r.json()
    assert activation["namespace"] == "guest"
    assert activation["response"]["result"] == {}
    # As in OpenWhisk, the blocking answer comes before the logs are collected; the stored record has them.
    stored = record(catalog.api, activation["activationId"])
    assert any(line.endswith("stdout: hello Cat!") for line in stored["logs"]), stored["logs"]


def test_a_binding_passes_its_parameters_to_catalog_actions(catalog: Catalog) -> None:
    put(catalog.api, "packages/myutils", {"binding": {"namespace": "whisk.system", "name": "utils"}})
    put(
        catalog.api,
        "packages/mytext",
        {
            "binding": {"namespace": "whisk.system", "name": "utils"},
            "parameters": [{"key": "num", "value": 2}],
        },
    )
    answer = invoke(catalog.api, "/api/v1/namespaces/_/actions/myutils/echo", {"x": 1})
    assert answer == {"x": 1}
    assert invoke(catalog.api, "/api/v1/namespaces/_/actions/mytext/head", {"lines": [3, 2, 1]}) == {
        "lines": [3, 2],
        "num": 2,
    }


def test_a_sequence_of_catalog_actions(catalog: Catalog) -> None:
    components = ["/whisk.system/utils/split", "/whisk.system/utils/sort", "/_/myutils/cat"]
    put(
        catalog.api,
        "actions/tidy",
        {"exec": {"kind": "sequence", "components": components}},
        overwrite="true",
    )
    answer = invoke(catalog.api, "/api/v1/namespaces/_/actions/tidy", {"payload": "c\nb\na"})
    assert answer == {"lines": ["a", "b", "c"], "payload": "a\nb\nc"}


def test_a_feed_action_run_in_a_sequence_answers_the_stub_error(catalog: Catalog) -> None:
    put(
        catalog.api,
        "actions/feedseq",
        {"exec": {"kind": "sequence", "components": ["/whisk.system/alarms/alarm"]}},
        overwrite="true",
    )
    answer = invoke(catalog.api, "/api/v1/namespaces/_/actions/feedseq", {"cron": "* * * * *"}, status=502)
    assert "served by Squall's feeds role" in answer["error"]
    assert "/whisk.system/alarms/alarm" in answer["error"]


def test_a_rule_runs_a_catalog_action(catalog: Catalog) -> None:
    put(catalog.api, "triggers/to-echo", {"parameters": [{"key": "from", "value": "trigger"}]})
    put(catalog.api, "rules/echo-rule", {"trigger": "/_/to-echo", "action": "/whisk.system/utils/echo"})
    r = fire(catalog.api, "to-echo", {"n": 7})
    assert r.status_code == 202, r.text
    trigger_record = record(catalog.api, r.json()["activationId"])
    line = json.loads(trigger_record["logs"][0])
    assert line["success"] is True and line["action"] == "whisk.system/utils/echo"
    run = record(catalog.api, line["activationId"])
    assert run["namespace"] == "guest"
    assert run["response"]["result"]["n"] == 7
    assert run["response"]["result"]["from"] == "trigger"


def test_the_guest_cannot_write_into_whisk_system(catalog: Catalog) -> None:
    code = {"exec": {"kind": "nodejs:18", "code": "function main () { return {} }"}}
    r = catalog.api.put(f"{SYS}/actions/utils/echo", params={"overwrite": "true"}, json=code)
    assert r.status_code == 403, r.text
    r = catalog.api.delete(f"{SYS}/packages/utils")
    assert r.status_code == 403, r.text
    # …and what it tried to replace is still the catalog's.
    assert invoke(catalog.api, utils("echo"), {"still": "here"}) == {"still": "here"}


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="needs node and npm")
def test_the_openwhisk_js_client_uses_the_catalog_and_its_feeds(catalog: Catalog) -> None:
    ensure_client()
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV and not k.startswith("__OW_")}
    env |= {"__OW_API_HOST": catalog.url, "__OW_API_KEY": GUEST_KEY, "__OW_NAMESPACE": "guest"}

    async def run() -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            "catalog",
            "feeds",
            cwd=COMPAT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = asyncio.run(run())
    lines = out.splitlines()
    failing = [line for line in lines if line.startswith("not ok")]
    assert not failing, "\n".join(failing) + f"\n{err}"
    assert code == 0, f"node exited {code}:\n{out}\n{err}"
    assert lines[-1] == "9 passed, 0 failed", out
