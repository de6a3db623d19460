"""The action loop proxy on the host, with the `native` launcher (the only one whose language the host has)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from runtimes.proxy import proxy_dir
from tests.unit.test_proxy_python import ProxyProcess, make_zip

LOOP_ARGV = [sys.executable, str(proxy_dir() / "loop_proxy.py")]

ECHO = """#!/bin/bash
echo "a log line for $__OW_ACTIVATION_ID"
echo "on stderr" >&2
echo "{\\"args\\": $1, \\"id\\": \\"$__OW_ACTIVATION_ID\\", \\"key\\": \\"${__OW_API_KEY-unset}\\"}"
"""


@pytest.fixture
def start() -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def starter(language: str = "native") -> ProxyProcess:
        started.append(ProxyProcess(LOOP_ARGV, {"SQUALL_LOOP_LANGUAGE": language}))
        return started[-1]

    yield starter
    for proxy in started:
        proxy.stop()


def test_native_script_gets_its_argument_env_and_logs(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    assert proxy.init(ECHO) == (200, {"ok": True})
    proxy.logs()
    status, result = proxy.run({"name": "x"}, activation_id="a1", api_key="k")
    assert status == 200
    assert result == {"args": {"name": "x"}, "id": "a1", "key": "k"}
    lines = proxy.log_texts()
    assert "stdout: a log line for a1" in lines and "stderr: on stderr" in lines
    # A key the previous run had and this one lacks is unset.
    assert proxy.run({}, activation_id="a2")[1] == {"args": {}, "id": "a2", "key": "unset"}


def test_native_zip_with_exec_and_a_helper_file(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    code = make_zip(
        {"exec": '#!/bin/sh\necho "{\\"helper\\": \\"$(cat helper.txt)\\"}"\n', "helper.txt": "hi"}
    )
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    assert proxy.run({}) == (200, {"helper": "hi"})


def test_native_results_that_are_not_objects(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    assert proxy.init("#!/bin/sh\necho not json\n") == (200, {"ok": True})
    assert proxy.run({}) == (502, {"error": "The action did not return a dictionary or array."})


def test_a_zip_without_exec_and_a_second_init_are_refused(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    assert proxy.init(make_zip({"other": "x"}), binary=True)[0] == 502
    assert "Zip file does not include 'exec'." in " ".join(proxy.log_texts())
    assert proxy.run({}) == (500, {"error": "no action defined yet"})
    second = start()
    assert second.init("#!/bin/sh\necho '{}'\n")[0] == 200
    assert second.init("#!/bin/sh\necho '{}'\n") == (
        403,
        {"error": "Cannot initialize the action more than once."},
    )


def test_nothing_compiled_means_no_artefact(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    assert proxy.init("#!/bin/sh\necho '{}'\n")[0] == 200
    assert proxy.client.post("/artefact", {})[0] == 404


def test_the_launcher_dying_is_command_exited(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    # The native launcher survives its executable; kill the launcher itself (its parent's parent is the proxy).
    assert proxy.init('#!/bin/sh\nkill -9 $PPID\necho "{}"\n')[0] == 200
    assert proxy.run({}) == (400, {"error": "command exited"})
    assert proxy.run({}) == (500, {"error": "no action defined yet"})
