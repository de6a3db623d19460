"""The Python in-container proxy, run on the host as a subprocess on a Unix socket: OpenWhisk's /init and /run
semantics, per-activation logs with their limit, and its warm round trip."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import runtimes.proxy as proxy_package
from broker.errors import Unavailable
from runtimes.proxy import PROXY_FILES, install_proxies, proxy_digest, proxy_dir, python_proxy

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr): (.*)$", re.S)
RUN_KEYS = {
    "namespace": "guest",
    "action_name": "/guest/pkg/act",
    "action_version": "0.0.1",
    "activation_id": "a" * 32,
    "transaction_id": "tid-1",
    "deadline": "1700000000000",
}


# --- harness (shared with test_proxy_node.py and the e2e smoke test) ---------------------------------------


class ProxyClient:
    """One HTTP/1.1 keep-alive connection to a proxy's Unix socket, with raw bytes in and out."""

    def __init__(self, path: str, timeout_s: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(path)
        self.buf = b""

    def request(
        self, target: str, body: bytes, method: str = "POST", close: bool = False
    ) -> tuple[int, bytes]:
        extra = b"Connection: close\r\n" if close else b""
        self.sock.sendall(
            b"%s %s HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (method.encode(), target.encode(), len(body), extra, body)
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(headers[b"Content-Length"])
        while len(self.buf) < length:
            self._fill()
        payload, self.buf = self.buf[:length], self.buf[length:]
        assert headers[b"Content-Type"] == b"application/json"
        return int(lines[0].split(b" ")[1]), payload

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the proxy closed the connection")
        self.buf += chunk

    def post(self, target: str, body: Any) -> tuple[int, Any]:
        status, payload = self.request(target, json.dumps(body).encode())
        return status, json.loads(payload)

    def close(self) -> None:
        self.sock.close()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


class ProxyProcess:
    """A proxy started on the host the way the pool starts it in a container (socket env, cwd a scratch dir)."""

    def __init__(
        self,
        argv: list[str] | Callable[[Path], tuple[list[str], dict[str, str]]],
        env: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sqp-", dir="/tmp"))  # short: a socket path has 108 bytes
        self.workdir = self.dir / "tmp"
        self.workdir.mkdir()
        self.socket_path = str(self.dir / "proxy.sock")
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        full_env |= {"SQUALL_PROXY_SOCKET": self.socket_path, **(env or {})}
        if callable(argv):  # a command that depends on the scratch directory
            argv, more_env = argv(self.workdir)
            full_env |= more_env
        started = time.monotonic()
        # A process group of its own: stop() ends every process the proxy started (a Node.js launcher's child
        # that spins in an action's loop outlives its parent otherwise, burning a core after the test).
        self.process = subprocess.Popen(
            argv, cwd=self.workdir, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        wait_for(
            lambda: os.path.exists(self.socket_path) or self.process.poll() is not None, 20, "the socket"
        )
        self.ready_ms = 1000 * (time.monotonic() - started)
        if self.process.poll() is not None:
            pytest.fail(f"the proxy exited: {self.process.communicate()}")
        self.client = ProxyClient(self.socket_path)

    def init(self, code: str, main: str = "main", binary: bool = False, **env: Any) -> tuple[int, Any]:
        value = {"name": "act", "main": main, "code": code, "binary": binary, "env": env}
        return self.client.post("/init", {"value": value})

    def run(self, value: Any = None, **keys: Any) -> tuple[int, Any]:
        return self.client.post("/run", {"value": {} if value is None else value, **RUN_KEYS, **keys})

    def logs(self) -> dict[str, Any]:
        status, body = self.client.post("/logs", {})
        assert status == 200
        assert set(body) == {"logs", "truncated"}
        for line in body["logs"]:
            assert LOG_LINE.match(line), line
        return body  # type: ignore[no-any-return]

    def log_texts(self) -> list[str]:
        """The activation's lines as "stream: text"."""
        return [f"{m[1]}: {m[2]}" for m in (LOG_LINE.match(line) for line in self.logs()["logs"]) if m]

    def peak_rss_kb(self) -> int:
        return sum(peak_rss_kb(pid) for pid in [self.process.pid, *children(self.process.pid)])

    def stop(self) -> None:
        self.client.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def peak_rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def make_zip(files: dict[str, str | bytes], stored: tuple[str, ...] = ()) -> str:
    """A base64 zip with deflated entries (stored for the names in `stored`)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            method = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            archive.writestr(name, content, compress_type=method)
    return base64.b64encode(out.getvalue()).decode()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


ECHO_SERVER = """
import os, socket, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1] + ".tmp")
listener.listen(1)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
conn, _ = listener.accept()
while data := conn.recv(65536):
    conn.sendall(data)
"""


def echo_floor_us(body: bytes, count: int) -> tuple[float, float]:
    """p50/p99 of a raw request/response over a Unix socket to an echo process: the floor of any proxy."""
    directory = tempfile.mkdtemp(prefix="sqe-", dir="/tmp")
    path = os.path.join(directory, "echo.sock")
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, path])
    try:
        wait_for(lambda: os.path.exists(path), 10, "the echo server")
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            client.sendall(body)
            received = 0
            while received < len(body):
                received += len(client.recv(65536))
            samples.append(1e6 * (time.perf_counter() - started))
        client.close()
        echo.wait(10)
    finally:
        echo.kill()
        shutil.rmtree(directory)
    return percentiles(samples)


def measure_warm_runs(proxy: ProxyProcess, count: int) -> tuple[float, float]:
    body = json.dumps({"value": {"x": 1}, **RUN_KEYS}).encode()
    for _ in range(1500):  # warm up: V8 optimizes the hot path after a few thousand calls
        proxy.client.request("/run", body)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        status, _ = proxy.client.request("/run", body)
        samples.append(1e6 * (time.perf_counter() - started))
        assert status == 200
    return percentiles(samples)


# --- fixtures -------------------------------------------------------------------------------------------------

PYTHON_ARGV = [sys.executable, str(proxy_dir() / "python_proxy.py")]


@pytest.fixture
def start() -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def starter(env: dict[str, str] | None = None) -> ProxyProcess:
        started.append(ProxyProcess(PYTHON_ARGV, env))
        return started[-1]

    yield starter
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start: Callable[..., ProxyProcess]) -> ProxyProcess:
    return start()


# --- start and HTTP -------------------------------------------------------------------------------------------


def test_socket_appears_listening_world_writable_and_alone(proxy: ProxyProcess) -> None:
    mode = os.stat(proxy.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o666
    # The temporary names are gone; the side door answers /logs while an action runs.
    assert sorted(os.listdir(proxy.dir)) == ["proxy.sock", "proxy.sock.logs", "tmp"]
    assert proxy.init("import os\ndef main(a):\n    return {'env': sorted(os.environ)}") == (
        200,
        {"ok": True},
    )
    status, result = proxy.run()
    assert status == 200
    assert not [k for k in result["env"] if k.startswith("SQUALL_")]
    print(f"\npython proxy ready {proxy.ready_ms:.0f} ms after spawn")


def test_keep_alive_several_connections_and_http_errors(proxy: ProxyProcess) -> None:
    assert proxy.init("def main(a):\n    return a")[0] == 200
    other = ProxyClient(proxy.socket_path)
    try:
        for i in range(3):
            assert proxy.client.post("/run", {"value": {"i": i}}) == (200, {"i": i})
            assert other.post("/run", {"value": {"j": i}}) == (200, {"j": i})
        assert other.request("/nope", b"{}")[0] == 404
        assert other.request("/run", b"", method="GET")[0] == 405
        assert other.request("/run", b'{"value":{}}', close=True) == (200, b"{}")
        with pytest.raises(ConnectionError):
            other.request("/run", b'{"value":{}}')
    finally:
        other.close()
    assert proxy.client.post("/run", {"value": {"still": True}}) == (200, {"still": True})


def test_sigterm_ends_the_proxy_at_once(proxy: ProxyProcess) -> None:
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=5) == 0


# --- /init ----------------------------------------------------------------------------------------------------


def test_run_before_init_second_init_and_missing_code(proxy: ProxyProcess) -> None:
    assert proxy.run() == (500, {"error": "no action defined yet"})
    assert proxy.client.request("/init", b"{not json")[0] == 400
    assert proxy.init("") == (403, {"error": "Missing main/no code to execute."})
    assert proxy.client.post("/init", {"value": {"main": "main"}}) == (
        403,
        {"error": "Missing main/no code to execute."},
    )
    assert proxy.init("def main(a):\n    return {'n': 1}") == (200, {"ok": True})
    assert proxy.init("def main(a):\n    return {'n': 2}") == (
        403,
        {"error": "Cannot initialize the action more than once."},
    )
    assert proxy.run() == (200, {"n": 1})


def test_entry_point_named_by_main(proxy: ProxyProcess) -> None:
    code = "def main(a):\n    return {'which': 'main'}\ndef handler(a):\n    return {'which': 'handler'}\n"
    assert proxy.init(code, main="handler") == (200, {"ok": True})
    assert proxy.run() == (200, {"which": "handler"})


@pytest.mark.parametrize(
    ("code", "main", "logged"),
    [
        ("def main(a)\n    return {}", "main", "SyntaxError"),
        ("raise RuntimeError('at import')", "main", "RuntimeError: at import"),
        ("import sys\nsys.exit(4)", "main", "SystemExit: 4"),
        ("def main(a):\n    return {}", "nope", "ImportError: cannot import name 'nope' from 'main__'"),
    ],
)
def test_init_failure_is_502_with_details_in_the_logs(
    proxy: ProxyProcess, code: str, main: str, logged: str
) -> None:
    assert proxy.init(code, main=main) == (502, {"error": "Cannot start action. Check logs for details."})
    assert any(logged in line for line in proxy.log_texts())
    # As with OpenWhisk's ActionLoop proxy, only a successful init counts.
    assert proxy.run() == (500, {"error": "no action defined yet"})
    assert proxy.init("def main(a):\n    return {'second': True}") == (200, {"ok": True})
    assert proxy.run() == (200, {"second": True})


def test_init_env_is_exported_and_stringified(proxy: ProxyProcess) -> None:
    code = "import os\ndef main(a):\n    return {k: os.environ.get(k) for k in ('PLAIN', 'NUM', 'OBJ')}"
    assert proxy.init(code, PLAIN="text", NUM=3, OBJ={"a": [1]}) == (200, {"ok": True})
    assert proxy.run() == (200, {"PLAIN": "text", "NUM": "3", "OBJ": '{"a": [1]}'})


def test_binary_code_that_is_not_a_zip_is_the_source(proxy: ProxyProcess) -> None:
    code = base64.b64encode(b"def main(a):\n    return {'from': 'base64'}\n").decode()
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    assert proxy.run() == (200, {"from": "base64"})


def test_zip_action_with_helpers_data_and_a_virtualenv(proxy: ProxyProcess) -> None:
    site = "virtualenv/lib/python3.11/site-packages"
    code = make_zip(
        {
            "__main__.py": (
                "import helper, fakepkg\n"
                "def main(a):\n"
                "    return {'helper': helper.VALUE, 'pkg': fakepkg.NAME, 'data': open('data.txt').read()}\n"
            ),
            "helper.py": "VALUE = 'from helper'\n",
            "data.txt": "relative to the action's directory",
            f"{site}/fakepkg/__init__.py": "NAME = 'from the virtualenv'\n",
        },
        stored=("helper.py",),
    )
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    assert proxy.run() == (
        200,
        {"helper": "from helper", "pkg": "from the virtualenv", "data": "relative to the action's directory"},
    )


def test_zip_virtualenv_activate_this_is_run(proxy: ProxyProcess) -> None:
    code = make_zip(
        {
            "__main__.py": "import os\ndef main(a):\n    return {'activated': os.environ.get('ACTIVATED')}\n",
            "virtualenv/bin/activate_this.py": "import os\nos.environ['ACTIVATED'] = __file__.rsplit('/', 3)[-3]\n",
        }
    )
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    assert proxy.run() == (200, {"activated": "virtualenv"})


def test_zip_with_exec_instead_of_main_py(proxy: ProxyProcess) -> None:
    code = make_zip({"exec": "def main(a):\n    return {'entry': 'exec'}\n"})
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    assert proxy.run() == (200, {"entry": "exec"})


def test_zip_without_main_py_is_refused(proxy: ProxyProcess) -> None:
    assert proxy.init(make_zip({"other.py": "x = 1"}), binary=True) == (
        502,
        {"error": "Cannot start action. Check logs for details."},
    )
    assert "stderr: Zip file does not include '__main__.py'." in proxy.log_texts()


# --- /run -----------------------------------------------------------------------------------------------------


def test_results_are_compact_json_objects_or_arrays(proxy: ProxyProcess) -> None:
    code = "def main(a):\n    return a['r']\n"
    assert proxy.init(code)[0] == 200
    body = json.dumps({"value": {"r": {"a": 1, "b": [1, 2], "s": "é€"}}}).encode()
    assert proxy.client.request("/run", body) == (200, '{"a":1,"b":[1,2],"s":"é€"}'.encode())
    assert proxy.run({"r": [1, {"x": None}]}) == (200, [1, {"x": None}])
    assert proxy.run({"r": {"error": "mine"}}) == (200, {"error": "mine"})
    for not_a_dict in (42, "text", None, True):
        assert proxy.run({"r": not_a_dict}) == (
            502,
            {"error": "The action did not return a dictionary or array."},
        )


def test_results_that_are_not_json_are_refused(proxy: ProxyProcess) -> None:
    code = "def main(a):\n    return {'set': {1}} if a.get('set') else {'nan': float('nan')}\n"
    assert proxy.init(code)[0] == 200
    refused = (502, {"error": "The action did not return a dictionary or array."})
    assert proxy.run({"set": True}) == refused
    assert proxy.run() == refused
    assert any("The action's result is not JSON" in line for line in proxy.log_texts())


def test_uncaught_exception_is_an_application_error_with_the_traceback_logged(proxy: ProxyProcess) -> None:
    assert proxy.init("def main(a):\n    raise ValueError('boom ' + a['w'])\n")[0] == 200
    assert proxy.run({"w": "here"}) == (200, {"error": "boom here"})
    lines = proxy.log_texts()
    assert "stderr: Traceback (most recent call last):" in lines
    assert "stderr: ValueError: boom here" in lines
    assert proxy.run({"w": "again"}) == (200, {"error": "boom again"})  # the container stays usable


def test_system_exit_ends_the_action(proxy: ProxyProcess) -> None:
    assert proxy.init("import sys\ndef main(a):\n    sys.exit(3)\n")[0] == 200
    assert proxy.run() == (400, {"error": "command exited"})
    assert proxy.run() == (500, {"error": "no action defined yet"})
    assert proxy.process.poll() is None


def test_ow_environment_per_run_and_api_key_removed_when_absent(proxy: ProxyProcess) -> None:
    code = (
        "import os\ndef main(a):\n    return {k: v for k, v in os.environ.items() if k.startswith('__OW_')}\n"
    )
    assert proxy.init(code)[0] == 200
    status, env = proxy.run(api_key="uuid:key", extra_key={"n": 1})
    assert status == 200
    assert env == {
        "__OW_NAMESPACE": "guest",
        "__OW_ACTION_NAME": "/guest/pkg/act",
        "__OW_ACTION_VERSION": "0.0.1",
        "__OW_ACTIVATION_ID": "a" * 32,
        "__OW_TRANSACTION_ID": "tid-1",
        "__OW_DEADLINE": "1700000000000",
        "__OW_API_KEY": "uuid:key",
        "__OW_EXTRA_KEY": '{"n": 1}',
    }
    status, env = proxy.run(activation_id="b" * 32)
    assert status == 200
    assert "__OW_API_KEY" not in env
    assert "__OW_EXTRA_KEY" not in env
    assert env["__OW_ACTIVATION_ID"] == "b" * 32


def test_actions_run_in_the_main_thread(proxy: ProxyProcess) -> None:
    code = (
        "import signal, threading\n"
        "def main(a):\n"
        "    signal.signal(signal.SIGALRM, lambda *_: None)\n"
        "    return {'main_thread': threading.current_thread() is threading.main_thread()}\n"
    )
    assert proxy.init(code)[0] == 200
    assert proxy.run() == (200, {"main_thread": True})


# --- logs -----------------------------------------------------------------------------------------------------


def test_logs_of_prints_stderr_and_child_processes_in_openwhisk_format(proxy: ProxyProcess) -> None:
    code = (
        "import os, subprocess, sys\n"
        "def main(a):\n"
        "    print('  hello  ', a['n'])\n"
        "    print('to stderr', file=sys.stderr)\n"
        "    subprocess.run(['sh', '-c', 'echo from child; echo child err >&2'], check=True)\n"
        "    os.write(1, b'raw fd write')\n"
        "    print('XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX')\n"
        "    sys.stdout.write('no newline at the end')\n"
        "    return {}\n"
    )
    assert proxy.init(code)[0] == 200
    assert proxy.run({"n": 1}) == (200, {})
    body = proxy.logs()
    assert body["truncated"] is False
    times = [line[:30] for line in body["logs"]]
    assert times == sorted(times)
    assert all(t.endswith("Z") and len(t) == 30 for t in times)
    texts = [f"{m[1]}: {m[2]}" for m in map(LOG_LINE.match, body["logs"]) if m]
    # Each stream keeps its order; how stdout and stderr interleave depends on when the proxy reads them.
    assert [t for t in texts if t.startswith("stdout")] == [
        "stdout: hello   1",  # trimmed at both ends, as OpenWhisk does
        "stdout: from child",
        # os.write and the next print share a line; plain OpenWhisk's sentinel is only text here
        "stdout: raw fd writeXXX_THE_END_OF_A_WHISK_ACTIVATION_XXX",
        "stdout: no newline at the end",
    ]
    assert [t for t in texts if t.startswith("stderr")] == ["stderr: to stderr", "stderr: child err"]
    assert proxy.logs() == {"logs": [], "truncated": False}  # fetched once
    assert proxy.run({"n": 2}) == (200, {})
    assert next(t for t in proxy.log_texts() if t.startswith("stdout")) == "stdout: hello   2"


def test_output_of_a_background_child_after_the_run_is_kept_for_later(proxy: ProxyProcess) -> None:
    code = "import subprocess\ndef main(a):\n    subprocess.Popen(['sh', '-c', 'sleep 1; echo late'])\n    return {}\n"
    assert proxy.init(code)[0] == 200
    assert proxy.run() == (200, {})
    assert proxy.logs()["logs"] == []
    collected: list[str] = []

    def late_line() -> bool:
        collected.extend(proxy.log_texts())
        return bool(collected)

    wait_for(late_line, 10, "the late line")
    assert collected == ["stdout: late"]


def test_a_long_line_is_cut_every_16_kib(proxy: ProxyProcess) -> None:
    assert (
        proxy.init("import sys\ndef main(a):\n    sys.stdout.write('y' * 40000 + '\\n')\n    return {}\n")[0]
        == 200
    )
    assert proxy.run() == (200, {})
    texts = proxy.log_texts()
    assert [len(t) for t in texts] == [8 + 16384, 8 + 16384, 8 + 40000 - 2 * 16384]


def test_log_limit_from_init_env_truncates_with_openwhisk_message(proxy: ProxyProcess) -> None:
    code = "def main(a):\n    for i in range(a['lines']):\n        print('line %03d' % i)\n    return {}\n"
    assert proxy.init(code, SQUALL_LOG_LIMIT_BYTES="1000")[0] == 200
    assert proxy.run({"lines": 100}) == (200, {})
    body = proxy.logs()
    assert body["truncated"] is True
    kept = body["logs"][:-1]
    used = sum(len(json.dumps(line)) - 1 for line in kept)  # each line weighs its JSON size + 1
    assert 1000 - 48 < used <= 1000  # the first line that does not fit (48 bytes) ends the log
    assert kept[0].endswith("stdout: line 000")
    assert body["logs"][-1].endswith(
        "stderr: Logs were truncated because the total bytes size exceeds the limit of 1000 bytes."
    )
    assert proxy.run({"lines": 2}) == (200, {})  # the next activation starts afresh
    assert proxy.logs()["truncated"] is False


def test_log_limit_from_the_start_environment(start: Callable[..., ProxyProcess]) -> None:
    proxy = start({"SQUALL_LOG_LIMIT_BYTES": "0"})
    assert proxy.init("def main(a):\n    print('x')\n    return {}\n")[0] == 200
    assert proxy.run() == (200, {})
    body = proxy.logs()
    assert body["truncated"] is True
    assert len(body["logs"]) == 1
    assert body["logs"][0].endswith("exceeds the limit of 0 bytes.")


def test_a_100_mb_log_flood_is_read_and_dropped_in_bounded_memory(proxy: ProxyProcess) -> None:
    code = (
        "import subprocess\n"
        "def main(a):\n"
        "    line = 'z' * 1023\n"
        "    for _ in range(50_000):\n"  # 50 MB through print ...
        "        print(line)\n"
        # ... and 50 MB from a child process, without newlines
        "    subprocess.run(['sh', '-c', 'head -c 50000000 /dev/zero | tr \"\\\\0\" z'], check=True)\n"
        "    return {'done': True}\n"
    )
    assert proxy.init(code)[0] == 200
    started = time.monotonic()
    assert proxy.run() == (200, {"done": True})
    body = proxy.logs()
    elapsed = time.monotonic() - started
    assert body["truncated"] is True
    assert body["logs"][-1].endswith("exceeds the limit of 10485760 bytes.")
    assert 9000 < len(body["logs"]) < 11000
    peak_mb = proxy.peak_rss_kb() / 1024
    print(f"\n100 MB flood: {elapsed:.2f} s, proxy peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 120
    assert proxy.run() == (200, {"done": True})  # and the next run is logged afresh
    assert proxy.logs()["truncated"] is True


# --- speed ----------------------------------------------------------------------------------------------------


def test_warm_round_trip_over_the_socket(proxy: ProxyProcess) -> None:
    assert proxy.init("def main(args):\n    return args\n")[0] == 200
    p50, p99 = measure_warm_runs(proxy, 1000)
    body = json.dumps({"value": {"x": 1}, **RUN_KEYS}).encode()
    floor50, floor99 = echo_floor_us(body, 1000)
    print(
        f"\npython proxy warm /run: p50 {p50:.0f} µs, p99 {p99:.0f} µs "
        f"(raw Unix-socket echo: p50 {floor50:.0f} µs, p99 {floor99:.0f} µs)"
    )
    assert p50 < 1500  # ≈ 0.1 to 0.3 ms on an idle 2-core machine; generous for a loaded one


# --- the log collector in-process: both ways to end an activation's log -------------------------------------


@pytest.fixture
def collector() -> Iterator[python_proxy.LogCollector]:
    """A collector on its own pipes (fds 1 and 2 of the test process stay as they are)."""
    logs = python_proxy.LogCollector(DEFAULT_LIMIT)
    yield logs
    os.close(logs.out_w)  # end of file on both pipes ends the reader thread
    os.close(logs.err_w)


DEFAULT_LIMIT = 10 * 1024 * 1024
REAL_UNREAD = python_proxy.unread


def collected(logs: python_proxy.LogCollector) -> tuple[list[str], bool]:
    fragment, truncated = logs.collect()
    lines = json.loads(b"[" + fragment + b"]")
    for line in lines:
        assert LOG_LINE.match(line), line
    return [line[31:] for line in lines], truncated


@pytest.fixture(params=["fast", "sentinel"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ "fast": the pipes are empty when the logs are asked for; "sentinel": as if they were not, so the
    collector writes its sentinels and waits for them."""
    if request.param == "sentinel":
        monkeypatch.setattr(python_proxy, "unread", lambda fd: 1)
    return str(request.param)


def test_collector_lines_partial_lines_and_a_fresh_start(
    collector: python_proxy.LogCollector, path: str
) -> None:
    collector.start()
    os.write(collector.out_w, b"one\n  two  \nno newline")
    os.write(collector.err_w, b"err\n")
    wait_for(lambda: REAL_UNREAD(collector.streams[0].fd) == 0, 5, "the reader")
    lines, truncated = collected(collector)
    assert truncated is False
    assert [t for t in lines if t.startswith("stdout")] == [
        "stdout: one",
        "stdout: two",
        "stdout: no newline",
    ]
    assert [t for t in lines if t.startswith("stderr")] == ["stderr: err"]
    assert collected(collector) == ([], False)
    os.write(collector.out_w, b"next\n")
    wait_for(lambda: collector.frag or path == "sentinel", 5, "the next line")
    assert collected(collector) == (["stdout: next"], False)


def test_collector_drops_foreign_and_stale_sentinels(collector: python_proxy.LogCollector, path: str) -> None:
    collector.start()
    stale = collector.marker + b"7\n"  # an epoch that is not the current one
    os.write(collector.out_w, b"a\n" + stale + b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\nb\n")
    wait_for(lambda: collector.frag.count(b",") >= 2, 5, "the lines")
    assert collected(collector) == (
        ["stdout: a", "stdout: XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", "stdout: b"],
        False,
    )


def test_collector_truncates_a_flood_across_reads(collector: python_proxy.LogCollector, path: str) -> None:
    collector.limit = 5000
    collector.start()

    def flood() -> None:
        os.write(collector.out_w, b"0123456789" * 10 + b"\n")
        for _ in range(5):  # 5 MB in writes larger than the pipe: the reader drains while they block
            os.write(collector.out_w, (b"x" * 999 + b"\n") * 1000)

    writer = threading.Thread(target=flood)
    writer.start()
    writer.join(30)
    lines, truncated = collected(collector)
    assert truncated is True
    assert lines[0] == "stdout: " + "0123456789" * 10
    assert (
        lines[-1]
        == "stderr: Logs were truncated because the total bytes size exceeds the limit of 5000 bytes."
    )
    assert len(lines) == 6  # 1 + 4 lines of 1 KB, then the notice
    os.write(collector.out_w, b"after\n")
    wait_for(lambda: collector.frag or path == "sentinel", 5, "the next line")
    assert collected(collector) == (["stdout: after"], False)


def test_collector_gives_up_on_missing_sentinels_with_openwhisk_notice(
    collector: python_proxy.LogCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(python_proxy, "unread", lambda fd: 1)
    monkeypatch.setattr(python_proxy, "LOG_WAIT_S", 0.05)
    # The reader is not running yet: the sentinels are not read in time.
    assert collected(collector) == (
        ["stderr: There was an issue while collecting your logs. Data might be missing."],
        False,
    )
    collector.start()  # the late sentinels of the given-up activation are dropped when they arrive
    os.write(collector.out_w, b"after\n")
    monkeypatch.setattr(python_proxy, "LOG_WAIT_S", 5)
    assert collected(collector) == (["stdout: after"], False)


# --- installing the proxies where containers can read them ------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
OWNER = (12345, 23456)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch directory that other users can traverse (pytest's own is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="sqi-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@needs_root
def test_install_copies_for_the_owner_and_is_idempotent(tmp_path: Path) -> None:
    dest = tmp_path / "squall" / "proxies"
    installed = install_proxies(dest, *OWNER)
    assert installed == dest / proxy_digest()
    for path, mode in [(dest, 0o755), (dest.parent, 0o755), (installed, 0o755)]:
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (*OWNER, mode)
    for name in PROXY_FILES:
        st = (installed / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (*OWNER, 0o644)
        assert (installed / name).read_bytes() == (proxy_dir() / name).read_bytes()
    before = {name: (installed / name).stat().st_ino for name in PROXY_FILES}
    assert install_proxies(dest, *OWNER) == installed
    assert {name: (installed / name).stat().st_ino for name in PROXY_FILES} == before  # not copied again
    assert os.listdir(dest) == [installed.name]


@needs_root
def test_install_repairs_a_damaged_copy_and_names_new_content_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "proxies"
    installed = install_proxies(dest, *OWNER)
    (installed / "node_proxy.js").write_text("damaged")
    assert install_proxies(dest, *OWNER) == installed
    assert (installed / "node_proxy.js").read_bytes() == (proxy_dir() / "node_proxy.js").read_bytes()

    changed = tmp_path / "changed"
    changed.mkdir()
    for name in PROXY_FILES:
        (changed / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(proxy_dir() / name, changed / name)
    with (changed / "python_proxy.py").open("a") as f:
        f.write("\n# a new version\n")
    monkeypatch.setattr(proxy_package, "proxy_dir", lambda: changed)
    newer = install_proxies(dest, *OWNER)
    assert newer != installed
    assert newer.name == proxy_digest(changed)
    assert (newer / "python_proxy.py").read_text().endswith("# a new version\n")
    assert sorted(os.listdir(dest)) == sorted([installed.name, newer.name])


@needs_root
def test_concurrent_installs_agree(tmp_path: Path) -> None:
    dest = tmp_path / "proxies"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(install_proxies(dest, *OWNER))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert set(results) == {dest / proxy_digest()}
    assert os.listdir(dest) == [proxy_digest()]  # no staging directory left behind


@needs_root
def test_install_refuses_a_place_the_owner_cannot_traverse(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    with pytest.raises(Unavailable, match=r"uid 12345 cannot traverse .*closed"):
        install_proxies(closed / "proxies", *OWNER)


# --- the side door: logs of an action that never comes back ---------------------------------------------------


def assert_exit_keeps_its_lines(
    proxy: ProxyProcess, code: dict[str, str], where: str, lines: list[tuple[str, str]]
) -> None:
    """An action (`code[where]`, "run" or "init") that ends its own process with status 3: the invoker's
    connection closes at once, and the lines it printed wait at the side door until it has answered."""
    if where == "run":
        assert proxy.init(code["run"])[0] == 200
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # the connection ends instead of answering
        proxy.run() if where == "run" else proxy.init(code["init"])
    assert time.monotonic() - started < 1.5
    body = side_door_logs(proxy, probe=False)  # the process ends once the door has answered
    assert [LOG_LINE.match(line).groups() for line in body["logs"]] == lines  # type: ignore[union-attr]
    assert proxy.process.wait(5) == 3


def side_door_logs(proxy: ProxyProcess, probe: bool = True) -> dict[str, Any]:
    """The side door's answer; with `probe`, also its answers to what it does not serve."""
    door = ProxyClient(proxy.socket_path + ".logs", timeout_s=15)
    try:
        status, body = door.post("/logs", {})
        if probe:
            assert door.request("/run", b"{}")[0] == 404
            assert door.request("/logs", b"", method="GET")[0] == 405
    finally:
        door.close()
    assert status == 200
    return body  # type: ignore[no-any-return]


STUCK_IN_RUN = """
import sys, time
def main(a):
    print('before', flush=True)
    print('err', file=sys.stderr)
    time.sleep(60)
"""
STUCK_IN_INIT = """
import sys, time
print('before', flush=True)
print('err', file=sys.stderr)
time.sleep(60)
def main(a):
    return a
"""


DYING = {
    "run": "import os, sys\ndef main(a):\n    print('about to die')\n    print('bye', file=sys.stderr)\n    os._exit(3)\n",
    "init": "import os, sys\nprint('about to die')\nprint('bye', file=sys.stderr)\nos._exit(3)\n",
}


@pytest.mark.parametrize("where", ["run", "init"])
def test_os_exit_hands_its_lines_to_the_side_door_before_the_process_ends(
    proxy: ProxyProcess, where: str
) -> None:
    assert_exit_keeps_its_lines(proxy, DYING, where, [("stdout", "about to die"), ("stderr", "bye")])


def test_os_exit_in_a_forked_child_ends_only_the_child(proxy: ProxyProcess) -> None:
    code = "import os\ndef main(a):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n    return {'ok': True}\n"
    assert proxy.init(code)[0] == 200
    started = time.monotonic()
    assert proxy.run() == (200, {"ok": True})
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("where", ["run", "init"])
def test_the_side_door_answers_logs_while_the_action_is_stuck(proxy: ProxyProcess, where: str) -> None:
    if where == "run":
        assert proxy.init(STUCK_IN_RUN)[0] == 200

    def call() -> None:
        with contextlib.suppress(OSError):  # the socket times out or closes at teardown: never answered
            proxy.run() if where == "run" else proxy.init(STUCK_IN_INIT)

    threading.Thread(target=call, daemon=True).start()
    time.sleep(0.5)
    body = side_door_logs(proxy)
    assert [LOG_LINE.match(line).groups() for line in body["logs"]] == [  # type: ignore[union-attr]
        ("stdout", "before"),
        ("stderr", "err"),
    ]
    assert body["truncated"] is False
