"""The `squall` CLI against one real `squall standalone` (rootless Podman), with an isolated config file:
CRUD of every entity kind, invoke -r, the feed lifecycle with an alarm seen by `activation tail`, poll, trace,
deploy/undeploy of a manifest with a feed and a rule, errors, and the README's CLI quick start run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from broker.config import GUEST_KEY
from squall.cli import main
from tests.e2e.test_standalone import Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
HELLO_PY = 'def main(args):\n    print("hi", args.get("name"))\n    return {"greeting": "Hello, " + args.get("name", "you")}\n'
FAILS_PY = 'def main(args):\n    return {"error": "nope"}\n'


@dataclass
class Cli:
    url: str
    workdir: Path
    config: Path

    def env(self) -> dict[str, str | None]:
        # The client's configuration comes from the isolated file only, never from the developer's.
        return {
            "WSK_CONFIG_FILE": str(self.config),
            "__OW_API_HOST": None,
            "__OW_API_KEY": None,
            "__OW_NAMESPACE": None,
        }

    def run(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, list(args), env=self.env(), catch_exceptions=False)
        assert result.exit_code == code, f"squall {' '.join(args)} → {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    workdir = tmp_path_factory.mktemp("cli-standalone")
    standalone = Standalone(workdir / "data", free_port(), workdir / "standalone.log")
    try:
        standalone.wait_ready()
        assert f"squall property set --apihost {standalone.url} --auth" in standalone.output()
        client = Cli(standalone.url, workdir, workdir / "wskprops")
        client.run("property", "set", "--apihost", standalone.url, "--auth", GUEST_KEY)
        yield client
    finally:
        standalone.stop()
    assert standalone.proc.returncode == 0, standalone.output()


def test_properties_live_in_the_isolated_file(cli: Cli) -> None:
    text = cli.config.read_text()
    assert f"APIHOST={cli.url}" in text and f"AUTH={GUEST_KEY}" in text
    shown = cli.run("property", "get").stdout
    assert re.search(r"whisk API host\s+" + re.escape(cli.url), shown)
    assert re.search(r"whisk API build\s+\S+", shown)
    assert cli.json("namespace", "list") == ["guest"]


def test_action_crud_invoke_and_errors(cli: Cli) -> None:
    source = cli.workdir / "hello.py"
    source.write_text(HELLO_PY)
    assert (
        "ok: created action hello"
        in cli.run("action", "create", "hello", str(source), "-p", "name", "Ann").stdout
    )
    result = json.loads(cli.run("action", "invoke", "hello", "-r").stdout)
    assert result == {"greeting": "Hello, Ann"}
    result = json.loads(cli.run("action", "invoke", "hello", "-p", "name", "Bo", "-r").stdout)
    assert result == {"greeting": "Hello, Bo"}
    record = cli.json("action", "get", "hello")
    assert record["exec"]["kind"].startswith("python:") and record["version"] == "0.0.1"
    cli.run("action", "update", "hello", "--memory", "128", "--web", "true")
    record = cli.json("action", "get", "hello")
    assert record["limits"]["memory"] == 128 and record["version"] == "0.0.2"
    assert record["parameters"] == [{"key": "name", "value": "Ann"}]  # an update keeps what it does not give
    url = cli.run("action", "get", "hello", "url").stdout
    assert f"{cli.url}/api/v1/web/guest/default/hello" in url
    assert "(parameters: *name)" in cli.run("action", "get", "hello", "--summary").stdout
    saved = cli.workdir / "saved.py"
    cli.run("action", "get", "hello", "--save-as", str(saved))
    assert saved.read_text() == HELLO_PY
    assert [a["name"] for a in cli.json("action", "list")].count("hello") == 1
    assert "/guest/hello" in cli.run("action", "list").stdout

    # errors: the server's message and a non-zero exit (148 for a 404, as wsk)
    missing = cli.run("action", "get", "missing", code=148)
    assert "Unable to get action 'missing': The requested resource does not exist." in missing.stderr
    again = cli.run("action", "create", "hello", str(source), code=1)
    assert "resource already exists" in again.stderr
    (cli.workdir / "fails.py").write_text(FAILS_PY)
    cli.run("action", "create", "fails", str(cli.workdir / "fails.py"))
    failed = cli.run("action", "invoke", "fails", "-r", code=1)
    assert json.loads(failed.stdout) == {"error": "nope"}
    cli.run("action", "delete", "fails")
    # a sequence of the catalog's actions
    cli.run("action", "create", "tidy", "--sequence", "/whisk.system/utils/split,/whisk.system/utils/sort")
    assert json.loads(cli.run("action", "invoke", "tidy", "-p", "payload", "b\na", "-r").stdout)["lines"] == [
        "a",
        "b",
    ]
    cli.run("action", "delete", "tidy")


def test_packages_triggers_rules_crud(cli: Cli) -> None:
    cli.run("package", "create", "tools", "-p", "region", "eu", "--shared", "yes")
    assert cli.json("package", "get", "tools")["publish"] is True
    cli.run("package", "update", "tools", "--shared", "no")
    assert cli.json("package", "get", "tools")["publish"] is False
    cli.run("package", "bind", "/whisk.system/utils", "myutils", "-p", "num", "1")
    assert json.loads(cli.run("action", "invoke", "myutils/head", "-p", "lines", "[3,2]", "-r").stdout)[
        "lines"
    ] == [3]
    assert {p["name"] for p in cli.json("package", "list")} >= {"tools", "myutils"}
    assert (
        "action /whisk.system/utils/sort"
        in cli.run("package", "get", "/whisk.system/utils", "--summary").stdout
    )

    cli.run("trigger", "create", "orders", "-p", "source", "shop")
    assert cli.json("trigger", "get", "orders")["parameters"] == [{"key": "source", "value": "shop"}]
    cli.run("trigger", "update", "orders", "-p", "source", "web")
    assert cli.json("trigger", "get", "orders")["parameters"] == [{"key": "source", "value": "web"}]
    assert "has no active rule" in cli.run("trigger", "fire", "orders").stdout
    cli.run("rule", "create", "on-order", "orders", "/whisk.system/utils/echo")
    assert "rule on-order is active" in cli.run("rule", "status", "on-order").stdout
    cli.run("rule", "disable", "on-order")
    assert cli.json("rule", "status", "on-order")["status"] == "inactive"
    cli.run("rule", "enable", "on-order")
    cli.run("rule", "update", "on-order", "orders", "myutils/echo")
    assert cli.json("rule", "get", "on-order")["action"] == {"path": "guest/myutils", "name": "echo"}
    fired = cli.json("trigger", "fire", "orders", "-p", "n", "7")
    _wait_recorded(cli, fired["activationId"])
    recorded(cli, fired["activationId"])  # the trace starts from the trigger's record in MongoDB
    tree = cli.json("activation", "trace", fired["activationId"])
    assert tree["role"] == "trigger" and tree["rules"][0]["rule"] == "guest/on-order"
    assert [r["name"] for r in cli.json("rule", "list")] == ["on-order"]
    assert [t["name"] for t in cli.json("trigger", "list")] == ["orders"]
    everything = cli.json("list")
    assert {"packages", "actions", "triggers", "rules"} == set(everything)

    cli.run("rule", "delete", "on-order", "--disable")
    cli.run("trigger", "delete", "orders")
    cli.run("package", "delete", "myutils")
    cli.run("package", "delete", "tools")
    cli.run("rule", "get", "on-order", code=148)
    cli.run("trigger", "get", "orders", code=148)
    cli.run("package", "get", "tools", code=148)


def recorded(cli: Cli, activation_id: str, deadline_s: float = 30) -> None:
    """Wait (with a deadline) until the recorder has the activation in MongoDB."""
    deadline = time.monotonic() + deadline_s
    while CliRunner().invoke(main, ["activation", "get", activation_id], env=cli.env()).exit_code != 0:
        assert time.monotonic() < deadline, f"activation {activation_id} not recorded in {deadline_s} s"
        time.sleep(0.1)


def _wait_recorded(cli: Cli, activation_id: str) -> bool:
    """Until the trace's records are in: `activation tail --cause` returns once the rule's run is on the
    stream, and the trigger's record is then waited for in MongoDB (the recorder, in a broker process of its
    own, may store it after the run has been streamed)."""
    cli.run(
        "activation",
        "tail",
        "--cause",
        activation_id,
        "--since",
        "0",
        "--kind",
        "action",
        "--count",
        "1",
        "--exit",
        "30",
    )
    recorded(cli, activation_id)
    return True


def test_feed_trigger_fires_into_tail_and_poll(cli: Cli) -> None:
    created = cli.run(
        "trigger", "create", "tick", "--feed", "/whisk.system/alarms/alarm", "-p", "cron", "* * * * * *"
    )
    assert "invoked /whisk.system/alarms/alarm with the CREATE lifecycle event" in created.stdout
    cli.run("rule", "create", "tick-hello", "tick", "hello")
    read = cli.json("trigger", "get", "tick")
    assert read["feedRead"]["config"]["cron"] == "* * * * * *"
    assert read["feedRead"]["status"]["active"] is True
    tailed = cli.run("activation", "tail", "--name", "tick", "--count", "1", "--exit", "30", "--json").stdout
    record = json.loads(tailed.splitlines()[0])
    assert record["name"] == "tick" and json.loads(record["logs"][0])["rule"] == "guest/tick-hello"
    run = cli.run(
        "activation",
        "tail",
        "--cause",
        record["activationId"],
        "--since",
        "0",
        "--count",
        "1",
        "--exit",
        "30",
        "--kind",
        "action",
    )
    assert "guest/hello" in run.stdout and "success" in run.stdout
    feeds = cli.json("feed", "list")
    assert [f["trigger"] for f in feeds] == ["/guest/tick"] and feeds[0]["status"]["active"] is True
    polled = cli.run("activation", "poll", "hello", "--exit", "5", "--since-seconds", "30").stdout
    assert "Activation: 'hello'" in polled
    cli.run("rule", "delete", "tick-hello")
    deleted = cli.run("trigger", "delete", "tick").stdout
    assert "DELETE lifecycle event" in deleted
    assert cli.json("feed", "list") == []
    # A feed that refuses its CREATE leaves no trigger behind.
    bad = cli.run(
        "trigger", "create", "bad", "--feed", "/whisk.system/alarms/alarm", "-p", "cron", "nonsense", code=1
    )
    assert "Unable to create trigger 'bad'" in bad.stderr and "not valid" in bad.stderr
    cli.run("trigger", "get", "bad", code=148)


def test_activation_reads(cli: Cli) -> None:
    # `hello` is a web action since its update: final parameters (name=Ann) cannot be overridden.
    refused = cli.run("action", "invoke", "hello", "-p", "name", "Cy", "-r", code=1)
    assert "parameters that are not allowed" in refused.stderr
    invoked = cli.json("action", "invoke", "hello", "--blocking")
    aid = invoked["activationId"]
    recorded(cli, aid)
    listed = cli.run("activation", "list", "hello", "--limit", "200").stdout
    assert "Activation ID" in listed
    result = json.loads(cli.run("activation", "result", aid).stdout)
    assert result == {"greeting": "Hello, Ann"}
    assert cli.json("activation", "get", aid)["activationId"] == aid
    logs = cli.run("activation", "logs", aid, "--strip").stdout
    assert "hi Ann" in logs
    cli.run("activation", "get", "not-an-id", code=1)
    assert cli.json("deadletter", "list") == []


MANIFEST = """
packages:
  shop:
    actions:
      greet:
        function: greet.py
        inputs:
          name: $CLI_TEST_WHO
    triggers:
      shop-tick:
        feed: /whisk.system/alarms/alarm
        inputs:
          cron: "* * * * * *"
    rules:
      shop-rule:
        trigger: shop-tick
        action: greet
"""


def test_deploy_and_undeploy_a_manifest_with_a_feed_and_a_rule(cli: Cli) -> None:
    folder = cli.workdir / "project"
    folder.mkdir()
    (folder / "greet.py").write_text(HELLO_PY)
    (folder / "manifest.yaml").write_text(MANIFEST)
    runner = CliRunner()
    env = cli.env() | {"CLI_TEST_WHO": "manifest"}
    deployed = runner.invoke(main, ["deploy", str(folder / "manifest.yaml")], env=env, catch_exceptions=False)
    assert deployed.exit_code == 0, deployed.output
    assert "deployed 4 entities" in deployed.stdout
    assert cli.json("action", "get", "shop/greet")["parameters"] == [{"key": "name", "value": "manifest"}]
    tailed = cli.run(
        "activation", "tail", "--name", "shop/greet", "--count", "1", "--exit", "30", "--json"
    ).stdout
    assert json.loads(tailed.splitlines()[0])["response"]["result"] == {"greeting": "Hello, manifest"}
    undeployed = runner.invoke(
        main, ["undeploy", "-m", str(folder / "manifest.yaml")], env=env, catch_exceptions=False
    )
    assert undeployed.exit_code == 0, undeployed.output
    cli.run("package", "get", "shop", code=148)
    cli.run("trigger", "get", "shop-tick", code=148)
    assert cli.json("feed", "list") == []


def quick_start() -> str:
    text = README.read_text()
    section = text.split("## Quick start with the `squall` CLI", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_quick_start_runs_as_written(cli: Cli, tmp_path: Path) -> None:
    script = quick_start().replace("http://127.0.0.1:3233", cli.url)
    cli.run("action", "delete", "hello")  # the other tests' action of that name
    env = {k: v for k, v in os.environ.items() if not k.startswith(("__OW_", "SQUALL_"))}
    env |= {
        "WSK_CONFIG_FILE": str(tmp_path / "wskprops"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(README.parent),
        "COLUMNS": "200",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert '"greeting": "Hello, Squall!"' in done.stdout
    assert "/guest/every-second" in done.stdout  # feed list
    assert done.stdout.count("guest/hello") >= 2  # the tailed runs
    assert "deleted trigger every-second" in done.stdout
