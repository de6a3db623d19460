"""Action-code fidelity on real rootless Podman: the logs of failing actions, the action's log limit (not NATS's),
array results and the blocking answer, as Apache OpenWhisk gives them (issue 9)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest

from broker.config import Settings
from runtimes.podman_service import PodmanService
from tests.e2e.test_invoke import Squall, notes, squall_on

pytestmark = [pytest.mark.e2e]

WARNING = "stderr: The action did not initialize or run as expected. Log data might be missing."
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z\s* (stdout|stderr): (.*)$", re.S)


@pytest.fixture(scope="module")
async def squall(settings: Settings) -> AsyncIterator[Squall]:
    async with PodmanService(settings), squall_on(settings) as (env, _):
        yield env


def texts(logs: list[str]) -> list[str]:
    """`stream: text` of each line, without its time."""
    found = [LINE.match(line) for line in logs]
    assert all(found), logs
    return [f"{m.group(1)}: {m.group(2)}" for m in found if m]


async def failed_record(
    squall: Squall, name: str, code: str, timeout_ms: int = 60_000
) -> tuple[dict, list[str]]:
    """Invoke a failing action blocking: its answer (502, no logs) and the stored record's log texts."""
    await squall.put(name, {"kind": "python:3.11", "code": code}, limits={"timeout": timeout_ms})
    r = await squall.invoke(name)
    assert r.status_code == 502, r.text
    answer = r.json()
    assert answer["response"]["status"] == "action developer error" and answer["logs"] == []
    stored = await squall.record(answer["activationId"])
    return answer, texts(stored.logs)


async def test_print_then_timeout_keeps_the_lines_and_warns(squall: Squall) -> None:
    code = "import sys, time\ndef main(a):\n    print('before the timeout')\n    print('oops', file=sys.stderr)\n    time.sleep(30)\n"
    started = time.monotonic()
    answer, logs = await failed_record(squall, "sleepy", code, timeout_ms=1000)
    assert time.monotonic() - started < 10
    assert answer["response"]["result"] == {
        "error": "The action exceeded its time limits of 1000 milliseconds."
    }
    assert notes(answer)["timeout"] is True
    assert logs == ["stdout: before the timeout", "stderr: oops", WARNING]


async def test_an_init_that_never_returns_keeps_the_lines_and_warns(squall: Squall) -> None:
    code = "import time\nprint('loading')\ntime.sleep(30)\ndef main(a):\n    return a\n"
    answer, logs = await failed_record(squall, "stuck-init", code, timeout_ms=1000)
    assert answer["response"]["result"] == {
        "error": "The action exceeded its time limits of 1000 milliseconds during initialization."
    }
    assert logs == ["stdout: loading", WARNING]


async def test_exit_in_init_keeps_the_lines_and_warns(squall: Squall) -> None:
    code = "import sys\nprint('about to exit')\nsys.exit(3)\ndef main(a):\n    return a\n"
    answer, logs = await failed_record(squall, "exit-init", code)
    assert answer["response"]["result"] == {"error": "Cannot start action. Check logs for details."}
    assert logs[0] == "stdout: about to exit" and "stderr: SystemExit: 3" in logs
    assert logs[-1] == WARNING


async def test_exit_in_run_keeps_the_lines_and_warns(squall: Squall) -> None:
    code = "import sys\ndef main(a):\n    print('about to exit')\n    sys.exit(1)\n"
    answer, logs = await failed_record(squall, "exit-run", code)
    assert answer["response"]["result"] == {"error": "command exited"}
    assert logs[0] == "stdout: about to exit" and "stderr: SystemExit: 1" in logs
    assert logs[-1] == WARNING


async def test_an_exception_at_init_warns_and_one_in_main_is_the_actions_own_error(squall: Squall) -> None:
    code = "print('importing')\nraise ValueError('bad config')\ndef main(a):\n    return a\n"
    _, logs = await failed_record(squall, "raise-init", code)
    assert logs[0] == "stdout: importing" and "stderr: ValueError: bad config" in logs
    assert logs[-1] == WARNING
    # In main, OpenWhisk's Python runtime answers {"error": str(exc)}: an application error, which its invoker
    # collects the logs of normally, with no warning.
    code = "def main(a):\n    print('running')\n    raise ValueError('bad input')\n"
    await squall.put("raise-run", {"kind": "python:3.11", "code": code})
    r = await squall.invoke("raise-run")
    assert r.status_code == 502 and r.json()["response"]["status"] == "application error"
    assert r.json()["response"]["result"] == {"error": "bad input"}
    logs = texts((await squall.record(r.json()["activationId"])).logs)
    assert logs[0] == "stdout: running" and "stderr: ValueError: bad input" in logs
    assert WARNING not in logs


async def test_os_exit_keeps_the_lines_and_warns(squall: Squall) -> None:
    """The process itself ends (no SystemExit to catch): the proxy hands the lines over before it goes."""
    code = "import os\ndef main(a):\n    print('about to die')\n    os._exit(1)\n"
    answer, logs = await failed_record(squall, "die", code)
    assert answer["response"]["result"] == {
        "error": "The action did not produce a valid response and exited unexpectedly."
    }
    assert logs == ["stdout: about to die", WARNING]
    code = "import os\nprint('loading')\nos._exit(1)\ndef main(a):\n    return a\n"
    answer, logs = await failed_record(squall, "die-init", code)
    assert answer["response"]["result"] == {"error": "The action did not initialize and exited unexpectedly."}
    assert logs == ["stdout: loading", WARNING]


async def node_failure(
    squall: Squall, name: str, code: str, timeout_ms: int = 60_000
) -> tuple[dict, list[str]]:
    await squall.put(name, {"kind": "nodejs:18", "code": code}, limits={"timeout": timeout_ms})
    r = await squall.invoke(name)
    assert r.status_code == 502, r.text
    assert r.json()["response"]["status"] == "action developer error" and r.json()["logs"] == []
    return r.json(), texts((await squall.record(r.json()["activationId"])).logs)


async def test_node_actions_that_spin_past_their_timeout_keep_their_lines(squall: Squall) -> None:
    """In the manner of OpenWhisk's loggingTimeout.js (a busy loop that logs) and initforever.js."""
    code = (
        "function main() {\n  let last = 0;\n  for (;;) {\n    const now = Date.now();\n"
        "    if (now - last > 200) { console.log('still busy'); last = now; }\n  }\n}\n"
    )
    answer, logs = await node_failure(squall, "node-spin", code, timeout_ms=1000)
    assert answer["response"]["result"] == {
        "error": "The action exceeded its time limits of 1000 milliseconds."
    }
    assert 2 <= logs.count("stdout: still busy") <= 6 and logs[-1] == WARNING
    code = "console.log('loading');\nwhile (true) {}\nfunction main() { return {}; }\n"
    answer, logs = await node_failure(squall, "node-init-forever", code, timeout_ms=1000)
    assert "during initialization" in answer["response"]["result"]["error"]
    assert logs == ["stdout: loading", WARNING]


async def test_node_actions_calling_process_exit_keep_their_lines(squall: Squall) -> None:
    """OpenWhisk's initexit.js (`process.exit(1)` while the code loads), with lines printed first; and in main."""
    code = "console.log('loading');\nprocess.exit(1);\nfunction main() { return {}; }\n"
    answer, logs = await node_failure(squall, "node-init-exit", code)
    assert answer["response"]["result"] == {"error": "The action did not initialize and exited unexpectedly."}
    assert logs == ["stdout: loading", WARNING]
    code = (
        "function main() {\n  console.log('running');\n  console.error('giving up');\n  process.exit(2);\n}\n"
    )
    started = time.monotonic()
    answer, logs = await node_failure(squall, "node-run-exit", code)
    assert time.monotonic() - started < 10
    assert answer["response"]["result"] == {
        "error": "The action did not produce a valid response and exited unexpectedly."
    }
    assert logs == ["stdout: running", "stderr: giving up", WARNING]


async def test_a_node_exception_nothing_catches_keeps_the_lines_and_its_report(squall: Squall) -> None:
    code = (
        "function main() {\n  console.log('started');\n"
        "  setTimeout(() => { throw new Error('late failure'); }, 10);\n  return new Promise(() => {});\n}\n"
    )
    answer, logs = await node_failure(squall, "node-uncaught", code)
    assert answer["response"]["result"] == {
        "error": "The action did not produce a valid response and exited unexpectedly."
    }
    assert logs[:2] == ["stdout: started", "stderr: Error: late failure"] and logs[-1] == WARNING


async def test_a_node_action_waiting_past_its_timeout_keeps_its_lines(squall: Squall) -> None:
    code = "function main() { console.log('waiting'); return new Promise(() => {}); }"
    await squall.put("node-wait", {"kind": "nodejs:18", "code": code}, limits={"timeout": 1000})
    r = await squall.invoke("node-wait")
    assert r.status_code == 502, r.text
    logs = texts((await squall.record(r.json()["activationId"])).logs)
    assert logs == ["stdout: waiting", WARNING]


@pytest.mark.parametrize("megabytes", [1, 9])
async def test_megabytes_of_logs_under_the_default_limit_are_kept_whole(
    squall: Squall, megabytes: int
) -> None:
    lines = megabytes * 1024
    code = f"def main(a):\n    for i in range({lines}):\n        print(f'{{i:06d}}' + 'z' * 1000)\n    return {{'n': {lines}}}\n"
    await squall.put(f"flood{megabytes}", {"kind": "python:3.11", "code": code})
    started = time.monotonic()
    r = await squall.invoke(f"flood{megabytes}")
    answered = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["logs"] == [] and r.json()["response"]["result"] == {"n": lines}
    stored = await squall.record(r.json()["activationId"], deadline_s=60)
    recorded = time.monotonic() - started
    logs = texts(stored.logs)
    assert len(logs) == lines, logs[-1]
    assert [line[8:14] for line in logs] == [f"{i:06d}" for i in range(lines)]
    size = sum(len(line) for line in stored.logs)
    print(f"\n{size / 1e6:.1f} MB of logs: answered in {answered:.2f} s, stored in {recorded:.2f} s")


async def test_a_1_mb_limit_truncates_with_openwhisks_exact_notice(squall: Squall) -> None:
    code = "def main(a):\n    for _ in range(20000):\n        print('y' * 199)\n    return {'done': True}\n"
    await squall.put("cut", {"kind": "python:3.11", "code": code}, limits={"logs": 1})
    r = await squall.invoke("cut")
    assert r.status_code == 200, r.text
    logs = (await squall.record(r.json()["activationId"])).logs
    assert texts(logs)[-1] == (
        "stderr: Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes."
    )
    assert 4000 < len(logs) < 20000
    assert sum(len(line) + 1 for line in logs[:-1]) <= 1024 * 1024


async def test_an_array_result_is_answered_bare(squall: Squall) -> None:
    await squall.put(
        "arr", {"kind": "python:3.11", "code": "def main(a):\n    return [1, {'two': 2}, 'three']\n"}
    )
    for query in ({}, {"result": "true"}):
        r = await squall.invoke("arr", **query)
        assert r.status_code == 200 and r.json() == [1, {"two": 2}, "three"], r.text
    stored = await squall.record(r.headers["x-openwhisk-activation-id"])
    assert stored.response.result == [1, {"two": 2}, "three"]
    await squall.put("arr-node", {"kind": "nodejs:18", "code": "function main() { return [1, 2]; }"})
    r = await squall.invoke("arr-node")
    assert r.status_code == 200 and r.json() == [1, 2], r.text
