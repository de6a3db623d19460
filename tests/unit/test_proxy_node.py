"""The Node.js in-container proxy, run on the host as a subprocess on a Unix socket: OpenWhisk's Node.js runtime
semantics for /init and /run, per-activation logs with their limit, and its warm round trip."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtimes.proxy import proxy_dir
from tests.unit.test_proxy_python import (
    LOG_LINE,
    RUN_KEYS,
    ProxyClient,
    ProxyProcess,
    assert_exit_keeps_its_lines,
    children,
    echo_floor_us,
    make_zip,
    measure_warm_runs,
    side_door_logs,
    wait_for,
)

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")
FAILED_INIT = "Initialization has failed due to: "


def node_argv(mode: str, node_options: tuple[str, ...], workdir: Path) -> tuple[list[str], dict[str, str]]:
    """How the pool starts the proxy in each mode (the FIFOs would be in the container's /tmp)."""
    assert NODE is not None
    proxy_js = str(proxy_dir() / "node_proxy.js")
    if mode == "launcher":
        return [NODE, *node_options, proxy_js], {}
    out, err = workdir / ".squall-stdout", workdir / ".squall-stderr"
    script = f'mkfifo -m 600 {out} {err} && exec "$@" 1<>{out} 2<>{err}'
    return ["sh", "-c", script, "sh", NODE, *node_options, proxy_js], {
        "SQUALL_PROXY_LOG_FIFOS": f"{out}:{err}"
    }


@pytest.fixture(params=["launcher", "fifo"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(mode: str) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def starter(env: dict[str, str] | None = None, node_options: tuple[str, ...] = ()) -> ProxyProcess:
        def argv(workdir: Path) -> tuple[list[str], dict[str, str]]:
            return node_argv(mode, node_options, workdir)

        started.append(ProxyProcess(argv, env))
        return started[-1]

    yield starter
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start: Callable[..., ProxyProcess]) -> ProxyProcess:
    return start()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- start and HTTP -------------------------------------------------------------------------------------------


def test_socket_appears_listening_and_the_environment_is_clean(proxy: ProxyProcess, mode: str) -> None:
    st_mode = os.stat(proxy.socket_path).st_mode
    assert stat.S_ISSOCK(st_mode)
    assert stat.S_IMODE(st_mode) == 0o666
    assert sorted(os.listdir(proxy.dir)) == ["proxy.sock", "proxy.sock.logs", "tmp"]
    assert proxy.init("function main() { return { env: Object.keys(process.env) }; }") == (200, {"ok": True})
    status, result = proxy.run()
    assert status == 200
    assert not [k for k in result["env"] if k.startswith(("SQUALL_", "NODE_CHANNEL"))]
    print(f"\nnode proxy ({mode}) ready {proxy.ready_ms:.0f} ms after spawn")


def test_keep_alive_several_connections_and_http_errors(proxy: ProxyProcess) -> None:
    assert proxy.init("function main(a) { return a; }")[0] == 200
    other = ProxyClient(proxy.socket_path)
    try:
        for i in range(3):
            assert proxy.client.post("/run", {"value": {"i": i}}) == (200, {"i": i})
            assert other.post("/run", {"value": {"j": i}}) == (200, {"j": i})
        assert other.request("/nope", b"{}")[0] == 404
        assert other.request("/run", b"", method="GET")[0] == 405
    finally:
        other.close()
    assert proxy.client.post("/run", {"value": {"still": True}}) == (200, {"still": True})


def test_sigterm_ends_every_process_of_the_proxy(proxy: ProxyProcess, mode: str) -> None:
    servers = (
        wait_for(lambda: children(proxy.process.pid), 5, "the server process") if mode == "launcher" else []
    )
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=5) == 0
    wait_for(lambda: not any(alive(pid) for pid in servers), 5, "the server to exit")


def test_the_proxy_exits_when_the_action_ends_the_process(proxy: ProxyProcess) -> None:
    assert proxy.init("function main() { process.exit(7); }")[0] == 200
    with pytest.raises(ConnectionError):
        proxy.run()
    assert proxy.process.wait(timeout=5) == 7


def test_node_options_reach_the_action(start: Callable[..., ProxyProcess]) -> None:
    proxy = start(node_options=("--max-old-space-size=64",))
    code = "function main() { return { argv: process.execArgv, heap: require('v8').getHeapStatistics().heap_size_limit }; }"
    assert proxy.init(code)[0] == 200
    status, result = proxy.run()
    assert status == 200
    assert "--max-old-space-size=64" in result["argv"]
    assert result["heap"] < 128 * 1024 * 1024


# --- /init ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "function main(a) { return { got: a.v }; }",
        "const main = (a) => ({ got: a.v });",
        "exports.main = (a) => ({ got: a.v });",
        "module.exports.main = function (a) { return { got: a.v }; };",
        "async function main(a) { return { got: a.v }; }",
        "function main(a) { return new Promise((r) => setTimeout(() => r({ got: a.v }), 5)); }",
    ],
)
def test_the_ways_to_define_main(proxy: ProxyProcess, code: str) -> None:
    assert proxy.init(code) == (200, {"ok": True})
    assert proxy.run({"v": 1}) == (200, {"got": 1})


def test_entry_point_named_by_main(proxy: ProxyProcess) -> None:
    assert (
        proxy.init(
            "function main() { return {w: 'main'}; }\nfunction other() { return {w: 'other'}; }", main="other"
        )[0]
        == 200
    )
    assert proxy.run() == (200, {"w": "other"})


def test_module_exports_assigned_a_function_is_not_main(proxy: ProxyProcess) -> None:
    # OpenWhisk looks for `main`, then module.exports.main / exports.main; a bare `module.exports = f` fails.
    status, body = proxy.init("module.exports = function (a) { return a; };")
    assert status == 502
    assert body["error"] == f"{FAILED_INIT}Action entrypoint 'main' is not a function."
    assert any("Error during initialization:" in line for line in proxy.log_texts())


def test_init_failures_stop_the_runtime(proxy: ProxyProcess) -> None:
    assert proxy.run() == (500, {"error": "no action defined yet"})
    assert proxy.client.request("/init", b"{not json")[0] == 400
    assert proxy.init("") == (403, {"error": "Missing main/no code to execute."})
    status, body = proxy.init("function main( { return {}; }")
    assert status == 502
    assert body["error"].startswith(FAILED_INIT + f"{proxy.workdir}/action.js:1\n" + "function main( {")
    assert "SyntaxError: Unexpected token '{'" in body["error"]
    assert any(line.startswith("stderr: Error during initialization: ") for line in proxy.log_texts())
    # As in OpenWhisk's Node.js runtime, the container is done for.
    assert proxy.init("function main() { return {}; }") == (
        403,
        {"error": "System not ready, status is stopped."},
    )
    assert proxy.run() == (403, {"error": "System not ready, status is stopped."})


def test_second_init_is_refused(proxy: ProxyProcess) -> None:
    assert proxy.init("function main() { return {n: 1}; }")[0] == 200
    assert proxy.init("function main() { return {n: 2}; }") == (
        403,
        {"error": "Cannot initialize the action more than once."},
    )
    assert proxy.run() == (200, {"n": 1})


def test_init_env_is_exported_as_openwhisk_does(proxy: ProxyProcess) -> None:
    code = "function main() { return { p: process.env.PLAIN, n: process.env.NUM, o: process.env.OBJ, z: process.env.NULL }; }"
    assert proxy.init(code, PLAIN="text", NUM=3, OBJ={"a": [1]}, NULL=None)[0] == 200
    assert proxy.run() == (200, {"p": "text", "n": "3", "o": '{"a":[1]}', "z": ""})


def test_zip_with_package_json_main_nested_files_and_node_modules(proxy: ProxyProcess) -> None:
    code = make_zip(
        {
            "package.json": json.dumps({"name": "act", "main": "lib/app.js"}),
            "lib/app.js": "const dep = require('dep'); const h = require('./helper');\n"
            "exports.main = (a) => ({ dep: dep.name, helper: h.value, cwd: require('fs').readFileSync('data.txt', 'utf8') });\n",
            "lib/helper.js": "exports.value = 'from helper';\n",
            "node_modules/dep/index.js": "exports.name = 'from node_modules';\n",
            "data.txt": "relative to the action's directory",
        },
        stored=("lib/helper.js", "data.txt"),
    )
    assert proxy.init(code, binary=True) == (200, {"ok": True})
    assert proxy.run() == (
        200,
        {"dep": "from node_modules", "helper": "from helper", "cwd": "relative to the action's directory"},
    )


def test_zip_with_index_js_and_a_file_dot_function_main(start: Callable[..., ProxyProcess]) -> None:
    first = start()
    assert (
        first.init(make_zip({"index.js": "exports.main = () => ({ from: 'index' });"}), binary=True)[0] == 200
    )
    assert first.run() == (200, {"from": "index"})
    second = start()
    code = make_zip({"handlers.js": "exports.hello = () => ({ from: 'handlers.hello' });"})
    assert second.init(code, main="handlers.hello", binary=True)[0] == 200
    assert second.run() == (200, {"from": "handlers.hello"})


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            make_zip({"other.js": "exports.main = () => ({});"}),
            "Zipped actions must contain either package.json or index.js at the root.",
        ),
        (
            base64.b64encode(b"not a zip at all").decode(),
            "There was an error uncompressing the action archive.",
        ),
        (
            make_zip({"../escape.js": "exports.main = () => ({});"}),
            "There was an error uncompressing the action archive.",
        ),
    ],
)
def test_bad_zips_fail_init(proxy: ProxyProcess, code: str, message: str) -> None:
    assert proxy.init(code, binary=True) == (502, {"error": FAILED_INIT + message})
    assert not (proxy.workdir / "escape.js").exists()


# --- /run -----------------------------------------------------------------------------------------------------


def test_results_as_openwhisk_nodejs_returns_them(proxy: ProxyProcess) -> None:
    code = """
    function main(a) {
      switch (a.kind) {
        case 'object': return { a: 1, s: 'é€' };
        case 'array': return [1, { x: null }];
        case 'undefined': return;
        case 'number': return 42;
        case 'string': return 'text';
        case 'reject-error': return Promise.reject(Object.assign(new TypeError('bad'), { code: 'E_BAD' }));
        case 'reject-nothing': return Promise.reject();
        case 'reject-string': return Promise.reject('just text');
        case 'app-error': return { error: 'mine' };
      }
    }"""
    assert proxy.init(code)[0] == 200
    assert proxy.client.request("/run", b'{"value":{"kind":"object"}}') == (200, '{"a":1,"s":"é€"}'.encode())
    assert proxy.run({"kind": "array"}) == (200, [1, {"x": None}])
    assert proxy.run({"kind": "undefined"}) == (200, {})
    assert proxy.run({"kind": "app-error"}) == (200, {"error": "mine"})
    assert proxy.run({"kind": "number"}) == (502, {"error": "The action did not return a dictionary."})
    assert proxy.run({"kind": "string"}) == (502, {"error": "The action did not return a dictionary."})
    assert any(
        'Result must be of type object but has type "number": 42' in line for line in proxy.log_texts()
    )
    status, body = proxy.run({"kind": "reject-error"})
    assert status == 200
    assert body["error"]["name"] == "TypeError"
    assert body["error"]["message"] == "bad"
    assert body["error"]["code"] == "E_BAD"
    assert body["error"]["stack"].startswith("TypeError: bad\n")
    assert proxy.run({"kind": "reject-nothing"}) == (200, {"error": {}})
    assert proxy.run({"kind": "reject-string"}) == (200, {"error": "just text"})


def test_a_synchronous_throw_is_a_developer_error_and_stops_the_runtime(proxy: ProxyProcess) -> None:
    assert proxy.init("function main(a) { if (a.fail) throw new Error('boom'); return {ok: 1}; }")[0] == 200
    assert proxy.run() == (200, {"ok": 1})
    assert proxy.run({"fail": True}) == (502, {"error": "An error has occurred: Error: boom"})
    assert any(line.startswith("stderr: Error: boom") for line in proxy.log_texts())
    assert proxy.run() == (403, {"error": "System not ready, status is stopped."})


def test_arguments_must_be_an_object(proxy: ProxyProcess) -> None:
    assert proxy.init("function main(a) { return { a }; }")[0] == 200
    assert proxy.client.post("/run", {"value": None}) == (200, {"a": {}})
    status, body = proxy.client.post("/run", {"value": 5})
    assert status == 403
    assert "the argument must be a dictionary but has type 'number'" in body["error"]


def test_ow_environment_per_run_and_api_key_removed_when_absent(proxy: ProxyProcess) -> None:
    code = "function main() { return Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('__OW_'))); }"
    assert proxy.init(code)[0] == 200
    status, env = proxy.run(api_key="uuid:key")
    assert status == 200
    assert env == {
        "__OW_NAMESPACE": "guest",
        "__OW_ACTION_NAME": "/guest/pkg/act",
        "__OW_ACTION_VERSION": "0.0.1",
        "__OW_ACTIVATION_ID": "a" * 32,
        "__OW_TRANSACTION_ID": "tid-1",
        "__OW_DEADLINE": "1700000000000",
        "__OW_API_KEY": "uuid:key",
    }
    status, env = proxy.run(activation_id="b" * 32)
    assert status == 200
    assert "__OW_API_KEY" not in env
    assert env["__OW_ACTIVATION_ID"] == "b" * 32


# --- logs -----------------------------------------------------------------------------------------------------


def test_logs_of_console_and_child_processes_in_openwhisk_format(proxy: ProxyProcess) -> None:
    code = r"""
    function main(a) {
      console.log('  hello  ', a.n);
      console.error('to stderr');
      require('child_process').execSync('echo from child; echo child err >&2', { stdio: 'inherit' });
      console.log('XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX');
      process.stdout.write('no newline at the end');
      return {};
    }"""
    assert proxy.init(code)[0] == 200
    assert proxy.run({"n": 1}) == (200, {})
    body = proxy.logs()
    assert body["truncated"] is False
    times = [line[:30] for line in body["logs"]]
    assert times == sorted(times)
    texts = [line[31:] for line in body["logs"]]
    assert [t for t in texts if t.startswith("stdout")] == [
        "stdout: hello   1",
        "stdout: from child",
        "stdout: XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX",  # plain OpenWhisk's sentinel is only text here
        "stdout: no newline at the end",
    ]
    assert [t for t in texts if t.startswith("stderr")] == ["stderr: to stderr", "stderr: child err"]
    assert proxy.logs() == {"logs": [], "truncated": False}
    assert proxy.run({"n": 2}) == (200, {})
    assert next(t for t in proxy.log_texts() if t.startswith("stdout")) == "stdout: hello   2"


def test_log_limit_from_init_env_truncates_with_openwhisk_message(proxy: ProxyProcess) -> None:
    code = "function main(a) { for (let i = 0; i < a.lines; i++) console.log('line ' + String(i).padStart(3, '0')); return {}; }"
    assert proxy.init(code, SQUALL_LOG_LIMIT_BYTES="1000")[0] == 200
    assert proxy.run({"lines": 100}) == (200, {})
    body = proxy.logs()
    assert body["truncated"] is True
    kept = body["logs"][:-1]
    used = sum(len(json.dumps(line)) - 1 for line in kept)
    assert 1000 - 48 < used <= 1000
    assert body["logs"][-1].endswith(
        "stderr: Logs were truncated because the total bytes size exceeds the limit of 1000 bytes."
    )
    assert proxy.run({"lines": 2}) == (200, {})
    assert proxy.logs()["truncated"] is False


def test_a_100_mb_log_flood_is_read_and_dropped(proxy: ProxyProcess, mode: str) -> None:
    code = r"""
    function main() {
      const line = 'z'.repeat(1023);
      for (let i = 0; i < 50000; i++) console.log(line);
      require('child_process').execSync('head -c 50000000 /dev/zero | tr "\\0" z', { stdio: 'inherit' });
      return { done: true };
    }"""
    assert proxy.init(code)[0] == 200
    started = time.monotonic()
    assert proxy.run() == (200, {"done": True})
    body = proxy.logs()
    elapsed = time.monotonic() - started
    assert body["truncated"] is True
    assert body["logs"][-1].endswith("exceeds the limit of 10485760 bytes.")
    assert 9000 < len(body["logs"]) < 11000
    peak_mb = proxy.peak_rss_kb() / 1024
    print(f"\n100 MB flood ({mode}): {elapsed:.2f} s, peak RSS of the proxy's processes {peak_mb:.0f} MB")
    assert peak_mb < 600
    assert proxy.run() == (200, {"done": True})
    assert proxy.logs()["truncated"] is True


# --- speed ----------------------------------------------------------------------------------------------------


def test_warm_round_trip_over_the_socket(proxy: ProxyProcess, mode: str) -> None:
    assert proxy.init("function main(args) { return args; }")[0] == 200
    p50, p99 = measure_warm_runs(proxy, 1000)
    body = json.dumps({"value": {"x": 1}, **RUN_KEYS}).encode()
    floor50, floor99 = echo_floor_us(body, 1000)
    print(
        f"\nnode proxy ({mode}) warm /run: p50 {p50:.0f} µs, p99 {p99:.0f} µs "
        f"(raw Unix-socket echo: p50 {floor50:.0f} µs, p99 {floor99:.0f} µs)"
    )
    assert p50 < 1500


# --- the side door: logs of an action that never comes back ---------------------------------------------------

STUCK_IN_RUN = """
function main() {
  console.log('before');
  console.error('err');
  return new Promise(() => {});
}
"""


SPINNING_IN_RUN = """
function main() {
  console.log('before');
  console.error('err');
  while (true) {}
}
"""


@pytest.mark.parametrize("code", [STUCK_IN_RUN, SPINNING_IN_RUN], ids=["waiting", "spinning"])
def test_the_side_door_answers_logs_while_a_run_is_stuck(proxy: ProxyProcess, code: str) -> None:
    assert proxy.init(code)[0] == 200

    def call() -> None:
        with contextlib.suppress(OSError):  # never answered: the socket closes at teardown
            proxy.run()

    threading.Thread(target=call, daemon=True).start()
    time.sleep(0.5)
    body = side_door_logs(proxy)
    assert [LOG_LINE.match(line).groups() for line in body["logs"]] == [  # type: ignore[union-attr]
        ("stdout", "before"),
        ("stderr", "err"),
    ]


EXITING = {
    "run": "function main() {\n  console.log('about to exit');\n  console.error('bye');\n  process.exit(3);\n}\n",
    "init": "console.log('about to exit');\nconsole.error('bye');\nprocess.exit(3);\n",
}


@pytest.mark.parametrize("where", ["run", "init"])
def test_process_exit_hands_its_lines_to_the_side_door_before_the_process_ends(
    proxy: ProxyProcess, where: str
) -> None:
    """OpenWhisk's initexit.js: the invoker sees the action end at once, and its lines are still there."""
    assert_exit_keeps_its_lines(proxy, EXITING, where, [("stdout", "about to exit"), ("stderr", "bye")])


def test_an_uncaught_exception_ends_the_process_with_its_report_in_the_lines(proxy: ProxyProcess) -> None:
    code = (
        "function main() {\n  console.log('started');\n"
        "  setTimeout(() => { throw new Error('late failure'); }, 10);\n  return new Promise(() => {});\n}\n"
    )
    assert proxy.init(code)[0] == 200
    with pytest.raises(ConnectionError):
        proxy.run()
    lines = [LOG_LINE.match(line).groups() for line in side_door_logs(proxy, probe=False)["logs"]]  # type: ignore[union-attr]
    assert lines[:2] == [("stdout", "started"), ("stderr", "Error: late failure")]
    assert proxy.process.wait(5) == 1
