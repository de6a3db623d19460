"""Squall's in-container proxy for Python actions: OpenWhisk's /init and /run, and each activation's logs.

THE PROXY CONTRACT. The container pool builds against exactly this; `node_proxy.js` implements it for Node.js.

Start
    Python    `python3 /squall/proxy/python_proxy.py`
    Node.js   `node [node options] /squall/proxy/node_proxy.js`: two processes (a launcher collects the output of
              the server, its child), so two Node.js starts; or one start (50 to 150 ms sooner cold):
              `sh -c 'mkfifo -m 600 /tmp/.o /tmp/.e && exec "$@" 1<>/tmp/.o 2<>/tmp/.e' sh node [node options]
              /squall/proxy/node_proxy.js` with SQUALL_PROXY_LOG_FIFOS=/tmp/.o:/tmp/.e (fds 1 and 2 on FIFOs that
              a worker thread reads). Node.js options apply to the process that runs the action either way.
    The working directory is a writable tmpfs (`/tmp`: zip actions are extracted there). Environment:
      SQUALL_PROXY_SOCKET     the Unix socket to serve on (default /run/squall/proxy.sock); its directory must be
                              writable until the socket exists.
      SQUALL_LOG_LIMIT_BYTES  the log limit of each activation (default 10485760); /init's `env` may set it too.
    These are removed from the environment the action sees.
    Ready = the socket path exists. It is bound and listening under a temporary name, made mode 0666 and then
    renamed into place, so a connect() to an existing path never meets a socket that is not listening yet.
    The side door `<socket>.logs` (see POST /logs) is in place before the socket is: the invoker makes the
    directory read-only for the action once the socket appears.
    SIGTERM ends the proxy at once. The proxy never closes an idle connection.

HTTP
    HTTP/1.1 with keep-alive on any number of connections; requests are served one at a time (concurrency 1).
    Request bodies need a Content-Length (a chunked body gets 411 here). Every reply is JSON with a
    Content-Length. A path other than the three below gets 404, a method other than POST 405.

POST /init   {"value": {"name", "main" (default "main"), "code", "binary", "env": {...}}}, as OpenWhisk sends it
    200 {"ok":true}
    400 {"error": ...}  the body is not JSON
    403 {"error":"Cannot initialize the action more than once."}
    403 {"error":"Missing main/no code to execute."}
    502 {"error": ...}  the code does not load. Python: "Cannot start action. Check logs for details." with the
        traceback in the logs (the ActionLoop runtime with OW_LOG_INIT_ERROR=1). Node.js: "Initialization has
        failed due to: <stack>" and "Error during initialization: ..." in the logs (openwhisk-runtime-nodejs).
    `env` values are exported to the process environment (Python: non-strings as JSON; Node.js as OpenWhisk's
    runtime: objects as JSON, null as "", anything else as its string).
    Python: plain source defining the entry function (name from `main`), or `binary` base64 of a zip with
    `__main__.py` (or `exec`) at its root and an optional `virtualenv/` (its `bin/activate_this.py` is run, or
    else its lib/python3*/site-packages are added to sys.path); base64 that is not a zip is taken as the source.
    Node.js: source defining `main` (a declaration, `exports.main` or `module.exports.main`; `module.exports =
    main` does not count, as in OpenWhisk), or a base64 zip with `package.json` (its `main` field) or `index.js`;
    `main` may be `file.function` for a zip.

POST /run    {"value": <params>, "namespace", "action_name", "action_version", "activation_id",
              "transaction_id", "deadline", "api_key"?}
    Every key but `value` is exported as `__OW_<KEY>` for this run (Python: non-strings as JSON; Node.js: string
    values only, as OpenWhisk's runtime); a key that the previous run had and this one lacks is unset, and
    `__OW_API_KEY` is unset whenever `api_key` is absent.
    200 <the result as compact JSON>: an object or an array, including {"error": ...} (an application error).
    400 {"error":"command exited"}  the action ended the interpreter (Python: SystemExit); later runs get 500
    400 {"error": ...}  the body is not JSON
    403 {"error":"System not ready, status is stopped."}  Node.js, after a failed init or a synchronous throw
    500 {"error":"no action defined yet"}  no successful /init yet
    502 {"error":"The action did not return a dictionary or array."}  Python: not a dict/list, or not JSON
    502 {"error":"The action did not return a dictionary."}  Node.js: not an object
    502 {"error":"An error has occurred: <error>"}  Node.js: `main` threw synchronously (the container is unusable)
    Errors, as the OpenWhisk runtimes do it:
      Python  an uncaught exception prints its traceback to stderr and gives 200 {"error": str(exc)}
              (openwhisk-runtime-python launcher.py: the ActionLoop proxy passes any JSON object on as 200).
      Node.js a rejected Promise gives 200 {"error": <the rejection, serialized like serialize-error>}, or
              {"error": {}} for a falsy one; `undefined` gives {}; a Promise is awaited.
    The proxy does not limit the size of results: the invoker does.

POST /logs   → 200 {"logs": [lines], "truncated": bool}, then the buffer is cleared.
    The invoker sends a run's /logs in the same write as its /run (HTTP/1.1 pipelining): a proxy answers the
    requests of a connection one after the other, in order, so /logs is served once /run has been answered.
    The output of the action on file descriptors 1 and 2 (child processes included: the proxy's own fds 1 and 2
    are pipes it reads) since the previous /logs. Everything written before the request is in the reply: the
    proxy writes a sentinel line on both pipes and answers once it has read both (Python skips this round trip
    when both pipes are empty). Lines are OpenWhisk's: "<UTC time, 30 characters:
    2026-11-27T03:18:13.123456789Z> stdout: <line, trimmed>"; longer lines are cut every 16 KiB. Each line weighs its JSON-encoded size + 1 byte; the first line past the limit
    and everything after it until the end of the activation are read and dropped, and the last line is then
    "<time> stderr: Logs were truncated because the total bytes size exceeds the limit of N bytes."
    The same request is answered on the side door, the socket `<socket>.logs`, while /init or /run is still
    running: there the invoker collects what an action printed before it timed out (its container is then
    destroyed). It is served outside the thread that runs the action (Python: a thread of its own; Node.js:
    the collector's worker thread, or the launcher process), so an action that spins is answered too. Python
    seals the lines with the sentinel round trip; Node.js takes what reached the collector within 30 ms.
    An action that ends its process (Python `os._exit`, Node.js `process.exit` or an uncaught exception, which
    prints its stack to stderr and exits with 1) first ends the proxy's connections, so the invoker learns at
    once, and then waits up to 2 s for the side door to have answered (in launcher form, the launcher outlives
    its child that long). A process killed by a signal takes its current lines with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import sys
import termios
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs import time in a proxy that must be ready fast
    from collections.abc import Callable
    from typing import Any, NoReturn

DEFAULT_SOCKET = "/run/squall/proxy.sock"
SIDE_DOOR = ".logs"  # suffix of the socket that answers POST /logs while the action runs
DEFAULT_LOG_LIMIT = 10 * 1024 * 1024
SENTINEL = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
MAX_LINE = 16 * 1024  # docker's split size for a line without a newline
LOG_WAIT_S = 10.0  # the sentinels come back within milliseconds; this only bounds a broken pipe reader
HANDOVER_S = 2.0  # how long an action's os._exit() waits for the invoker to take its lines
MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024
JAVA_TRIM = "".join(map(chr, range(33)))  # Scala's String.trim, which OpenWhisk applies to each log line
TRUNCATED = "Logs were truncated because the total bytes size exceeds the limit of {} bytes."
LOG_FAILURE = "There was an issue while collecting your logs. Data might be missing."
REASONS = {200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
           411: b"Length Required", 413: b"Payload Too Large", 431: b"Request Header Fields Too Large",
           500: b"Internal Server Error", 502: b"Bad Gateway"}  # fmt: skip

OK_BODY = b'{"ok":true}'
NOT_DICT = b'{"error":"The action did not return a dictionary or array."}'
CANNOT_START = b'{"error":"Cannot start action. Check logs for details."}'


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()


class Clock:
    """UTC timestamps with 9 fractional digits, the width of docker's (and so OpenWhisk's) log times."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        second, fraction = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{fraction:09d}Z"


class Stream:
    __slots__ = ("closed", "done", "fd", "held", "name", "partial")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.partial = b""  # the start of a line whose newline has not been read yet
        self.done = False  # this activation's sentinel was read; what follows belongs to the next one
        self.held = b""
        self.closed = False


class LogCollector:
    """Owns the pipes behind fds 1 and 2; a thread reads them into the current activation's log lines."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # The nonce keeps an action from ending its own log by printing the sentinel; the epoch tells this
        # activation's sentinels from late ones of an activation whose collection timed out.
        self.marker = SENTINEL + b"-" + os.urandom(6).hex().encode() + b"-"
        self.cond = threading.Condition()
        self.epoch = 0
        self.frag = bytearray()  # the JSON-encoded lines, comma-separated
        self.used = 0
        self.truncated = False
        self.sealed: tuple[int, bytes, bool] | None = None
        self.clock = Clock()
        out_r, self.out_w = os.pipe()
        err_r, self.err_w = os.pipe()
        self.streams = (Stream(out_r, "stdout"), Stream(err_r, "stderr"))

    def redirect(self) -> None:
        """Point fds 1 and 2 at the pipes (inherited by child processes); the proxy keeps its own write ends for
        the sentinels, so an action that closes fd 1 or 2 cannot lose them."""
        os.dup2(self.out_w, 1)
        os.dup2(self.err_w, 2)

    def start(self) -> None:
        threading.Thread(target=self._read_loop, name="squall-logs", daemon=True).start()

    def collect(self) -> tuple[bytes, bool]:
        """This activation's lines (a JSON array's inside) and whether they were truncated."""
        with self.cond:
            # The reader reads and processes under the lock: with both pipes empty, everything written so far
            # is in the lines already, and no sentinel round trip is needed.
            if not any(s.done or s.closed or unread(s.fd) for s in self.streams):
                for s in self.streams:
                    if s.partial:
                        partial, s.partial = s.partial, b""
                        self._line(s, partial)
                self._seal(None)
                return self._take()
            epoch = self.epoch
        line = self.marker + str(epoch).encode() + b"\n"
        os.write(self.out_w, line)
        os.write(self.err_w, line)
        with self.cond:
            if not self.cond.wait_for(
                lambda: self.sealed is not None and self.sealed[0] == epoch, LOG_WAIT_S
            ):
                self._seal(LOG_FAILURE)
            return self._take()

    def _take(self) -> tuple[bytes, bool]:
        sealed, self.sealed = self.sealed, None
        assert sealed is not None
        return sealed[1], sealed[2]

    def _read_loop(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        by_fd = {s.fd: s for s in self.streams}
        while True:
            with self.cond:
                if all(s.closed for s in self.streams):
                    return
                wanted = {s.fd for s in self.streams if not (s.done or s.closed)}
            for fd in registered - wanted:
                poller.unregister(fd)
            for fd in wanted - registered:
                poller.register(fd, select.POLLIN)
            registered = wanted
            # While one stream waits for the other's sentinel, wake up now and then: a timed-out collect()
            # may have started the next activation from the main thread.
            for fd, _ in poller.poll(-1 if len(wanted) == len(self.streams) else 50):
                with self.cond:
                    try:
                        data = os.read(fd, 65536)  # readable: this does not block
                    except OSError:
                        data = b""
                    stream = by_fd[fd]
                    if data:
                        self._feed(stream, data)
                    else:
                        stream.closed = True

    def _feed(self, s: Stream, data: bytes) -> None:
        buf = s.partial + data if s.partial else data
        s.partial = b""
        pos, end = 0, len(buf)
        while pos < end:
            if s.done:
                s.held += buf[pos:]
                return
            if self.truncated:  # only the sentinel matters now: find it at C speed
                at = buf.find(self.marker, pos)
                if at < 0:
                    s.partial = buf[max(pos, end - len(self.marker)) :]
                    return
                pos = at
            newline = buf.find(b"\n", pos)
            if newline < 0:
                self._keep_partial(s, buf[pos:])
                return
            self._line(s, buf[pos:newline])
            pos = newline + 1

    def _keep_partial(self, s: Stream, rest: bytes) -> None:
        # Cut a line without a newline into MAX_LINE pieces, but keep enough of its end that a sentinel
        # arriving right behind it is never cut.
        keep = len(self.marker) + 24
        start = 0
        while len(rest) - start > MAX_LINE + keep:
            self._line(s, rest[start : start + MAX_LINE])
            start += MAX_LINE
        s.partial = rest[start:]

    def _line(self, s: Stream, raw: bytes) -> None:
        at = raw.find(self.marker)
        if at < 0:
            self._emit(s, raw)
            return
        if at:
            self._emit(s, raw[:at])  # output without a final newline, followed by the sentinel
        digits = raw[at + len(self.marker) :]
        if digits.isdigit() and int(digits) == self.epoch:
            s.done = True
            if all(t.done for t in self.streams):
                self._seal(None)

    def _emit(self, s: Stream, raw: bytes) -> None:
        for start in range(0, max(len(raw), 1), MAX_LINE):
            if self.truncated:
                return
            text = raw[start : start + MAX_LINE].decode("utf-8", "replace").strip(JAVA_TRIM)
            encoded = json.dumps(f"{self.clock.now()} {s.name}: {text}", ensure_ascii=False).encode()
            weight = len(encoded) - 1  # without its quotes, plus a newline
            if self.used + weight > self.limit:
                self.truncated = True
                return
            self.used += weight
            self._append(encoded)

    def _append(self, encoded: bytes) -> None:
        if self.frag:
            self.frag += b","
        self.frag += encoded

    def _seal(self, failure: str | None) -> None:
        """End the current activation's log (lock held) and start the next one."""
        if self.truncated:
            self._append(json.dumps(f"{self.clock.now()} stderr: {TRUNCATED.format(self.limit)}").encode())
        if failure is not None:
            self._append(json.dumps(f"{self.clock.now()} stderr: {failure}").encode())
        self.sealed = (self.epoch, bytes(self.frag), self.truncated)
        self.frag, self.used, self.truncated = bytearray(), 0, False
        self.epoch += 1
        self.cond.notify_all()
        for s in self.streams:
            s.done = False
            held, s.held = s.held, b""
            if held:
                self._feed(s, held)


class InitError(Exception):
    """A reason the action cannot load, printed to the logs as is (no traceback)."""


class Proxy:
    """The action's state and the three endpoints."""

    def __init__(self, logs: LogCollector, workdir: str) -> None:
        self.logs = logs
        self.workdir = workdir
        self.initialized = False
        self.main: Callable[[Any], Any] | None = None
        self.run_env: set[str] = set()

    def dispatch(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        handler = {"/run": self.run, "/init": self.init, "/logs": self.fetch_logs}.get(
            target.partition("?")[0]
        )
        if handler is None:
            return 404, error_body(f"no such endpoint: {target}")
        if method != "POST":
            return 405, error_body(f"{method} is not allowed on {target}")
        return handler(body)

    def init(self, body: bytes) -> tuple[int, bytes]:
        if self.initialized:
            return 403, error_body("Cannot initialize the action more than once.")
        try:
            message = json.loads(body)
        except ValueError as exc:
            return 400, error_body(f"Error unmarshaling request: {exc}")
        value = message.get("value") if isinstance(message, dict) else None
        if not isinstance(value, dict):
            value = {}
        code, main = value.get("code"), value.get("main") or "main"
        if not isinstance(code, str) or not code:
            return 403, error_body("Missing main/no code to execute.")
        env = value.get("env")
        if isinstance(env, dict):
            self._init_env(env)
        try:
            self.main = load_action(code, bool(value.get("binary")), str(main), self.workdir)
        except InitError as exc:
            print(exc, file=sys.stderr)
            return 502, CANNOT_START
        except BaseException:  # a failing import may raise anything, SystemExit included
            import traceback

            traceback.print_exc()
            return 502, CANNOT_START
        finally:
            flush_std()
        self.initialized = True
        return 200, OK_BODY

    def _init_env(self, env: dict[str, Any]) -> None:
        for key, val in env.items():
            text = val if isinstance(val, str) else json.dumps(val)
            if key == "SQUALL_LOG_LIMIT_BYTES":
                self.logs.limit = parse_limit(text, self.logs.limit)
                continue
            try:
                os.environ[str(key)] = text
            except ValueError as exc:  # a name with "=" or a NUL byte cannot be exported
                print(f"Cannot export {key!r} to the environment: {exc}", file=sys.stderr)

    def run(self, body: bytes) -> tuple[int, bytes]:
        main = self.main
        if main is None:
            return 500, error_body("no action defined yet")
        try:
            message = json.loads(body)
        except ValueError as exc:
            return 400, error_body(f"Error unmarshaling request: {exc}")
        if not isinstance(message, dict):
            return 400, error_body("Error unmarshaling request: not an object")
        self._run_env(message)
        try:
            result = main(message.get("value", {}))
        except Exception as exc:
            import traceback

            print(traceback.format_exc(), file=sys.stderr)
            result = {"error": str(exc)}
        except BaseException:  # SystemExit, KeyboardInterrupt: OpenWhisk's launcher process would be gone
            import traceback

            print(traceback.format_exc(), file=sys.stderr)
            self.main = None
            return 400, error_body("command exited")
        finally:
            flush_std()
        return encode_result(result)

    def _run_env(self, message: dict[str, Any]) -> None:
        env = os.environ
        exported: set[str] = set()
        for key, val in message.items():
            if key == "value" or val is None:
                continue
            name = "__OW_" + key.upper()
            env[name] = val if isinstance(val, str) else json.dumps(val)
            exported.add(name)
        for name in self.run_env - exported:
            env.pop(name, None)
        if "__OW_API_KEY" not in exported:
            env.pop("__OW_API_KEY", None)
        self.run_env = exported

    def fetch_logs(self, _body: bytes) -> tuple[int, bytes]:
        flush_std()
        fragment, truncated = self.logs.collect()
        return 200, b'{"logs":[%s],"truncated":%s}' % (fragment, b"true" if truncated else b"false")


def encode_result(result: object) -> tuple[int, bytes]:
    if isinstance(result, dict | list | tuple):
        try:
            text = json.dumps(result, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            print(f"The action's result is not JSON: {exc}", file=sys.stderr)
            flush_std()
            return 502, NOT_DICT
        try:
            return 200, text.encode()
        except UnicodeEncodeError:  # lone surrogates: let JSON escape them
            return 200, json.dumps(result, separators=(",", ":"), allow_nan=False).encode()
    return 502, NOT_DICT


def load_action(code: str, binary: bool, main: str, workdir: str) -> Callable[[Any], Any]:
    """Write or extract the code into a fresh directory under `workdir`, import it as `main__` (the module name
    OpenWhisk's Python runtime uses) and return its entry function."""
    import importlib.machinery
    import importlib.util

    root = fresh_dir(workdir)
    entry = os.path.join(root, "main__.py")
    source = code.encode()
    if binary:
        import base64
        import binascii
        import io
        import zipfile

        try:
            source = base64.b64decode(code)
        except (binascii.Error, ValueError) as exc:
            raise InitError(f"Cannot decode the action's base64 code: {exc}") from None
        if zipfile.is_zipfile(io.BytesIO(source)):
            with zipfile.ZipFile(io.BytesIO(source)) as archive:
                archive.extractall(root)
            found = [p for p in ("__main__.py", "exec") if os.path.isfile(os.path.join(root, p))]
            if not found:
                raise InitError("Zip file does not include '__main__.py'.")
            entry = os.path.join(root, found[0])
            activate_virtualenv(root)
            source = b""
    if source:
        with open(entry, "wb") as out:
            out.write(source)
    sys.path.insert(0, root)
    os.chdir(root)
    loader = importlib.machinery.SourceFileLoader("main__", entry)
    spec = importlib.util.spec_from_file_location("main__", entry, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["main__"] = module
    loader.exec_module(module)
    function = getattr(module, main, None)
    if function is None:
        raise InitError(f"ImportError: cannot import name '{main}' from 'main__' ({entry})")
    return function  # type: ignore[no-any-return]


def activate_virtualenv(root: str) -> None:
    venv = os.path.join(root, "virtualenv")
    if not os.path.isdir(venv):
        return
    activate = os.path.join(venv, "bin", "activate_this.py")
    if os.path.isfile(activate):  # what OpenWhisk's runtime does with a `virtualenv` made by virtualenv
        with open(activate) as f:
            exec(compile(f.read(), activate, "exec"), {"__file__": activate})
        return
    import glob
    import site

    for path in sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))):
        site.addsitedir(path)  # a `python -m venv` has no activate_this.py


def fresh_dir(workdir: str) -> str:
    for n in range(1000):
        path = os.path.join(workdir, "action" if n == 0 else f"action-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise InitError(f"no free directory for the action in {workdir}")


def unread(fd: int) -> int:
    """How many bytes wait in a pipe."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the action may have replaced or closed them
            stream.flush()


def parse_limit(text: str, default: int) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return default


# --- HTTP/1.1 over the Unix socket -------------------------------------------------------------------------------


class Request:
    __slots__ = ("body", "keep_alive", "method", "target")

    def __init__(self, method: str, target: str, body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.body = body
        self.keep_alive = keep_alive


def parse_request(buf: bytearray) -> tuple[Request | int | None, int]:
    """A complete request at the start of `buf` and its length; (None, 0) if incomplete; (status, 0) if bad."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return (431 if len(buf) > MAX_HEAD else None), 0
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400, 0
    method, target, version = parts
    length, keep_alive = 0, version == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            if not value.isdigit():
                return 400, 0
            length = int(value)
        elif name == "transfer-encoding" and value != "identity":
            return 411, 0
        elif name == "connection":
            keep_alive = "close" not in value and (keep_alive or "keep-alive" in value)
    if length > MAX_BODY:
        return 413, 0
    start = end + 4
    if len(buf) < start + length:
        return None, 0
    return Request(method, target, bytes(buf[start : start + length]), keep_alive), start + length


def respond(conn: socket.socket, status: int, payload: bytes, keep_alive: bool) -> None:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        status, REASONS.get(status, b"Unknown"), len(payload), b"" if keep_alive else b"Connection: close\r\n",
    )  # fmt: skip
    if len(payload) < 65536:
        conn.sendall(head + payload)
    else:
        conn.sendall(head)
        conn.sendall(payload)


class Server:
    """One thread, one epoll: requests are handled in order in the main thread, where action code runs (some
    code, like `signal.signal`, only works there)."""

    def __init__(self, listener: socket.socket, proxy: Proxy, diagnostics: int) -> None:
        self.listener = listener
        self.proxy = proxy
        self.diagnostics = diagnostics  # the container's own stderr, for the proxy's failures
        self.epoll = select.epoll()
        self.conns: dict[int, tuple[socket.socket, bytearray]] = {}

    def serve_forever(self) -> None:
        self.listener.setblocking(False)
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        while True:
            for fd, _ in self.epoll.poll():
                if fd == self.listener.fileno():
                    self._accept()
                elif fd in self.conns and not self._serve(*self.conns[fd]):
                    self._close(fd)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)  # replies are written with sendall; reads happen only once epoll says so
        self.conns[conn.fileno()] = (conn, bytearray())
        self.epoll.register(conn.fileno(), select.EPOLLIN)

    def disconnect(self) -> None:
        """End every connection now (from any thread): their peers see the end at once."""
        for conn, _ in list(self.conns.values()):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _close(self, fd: int) -> None:
        conn, _ = self.conns.pop(fd)
        self.epoll.unregister(fd)
        conn.close()

    def _serve(self, conn: socket.socket, buf: bytearray) -> bool:
        """Read what arrived and answer every complete request; False to close the connection."""
        try:
            data = conn.recv(262144)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        buf += data
        while True:
            request, used = parse_request(buf)
            if request is None:
                return True
            try:
                if isinstance(request, int):
                    respond(conn, request, error_body(REASONS[request].decode()), False)
                    return False
                del buf[:used]
                status, payload = self._dispatch(request)
                respond(conn, status, payload, request.keep_alive)
            except OSError:
                return False
            if not request.keep_alive:
                return False

    def _dispatch(self, request: Request) -> tuple[int, bytes]:
        try:
            return self.proxy.dispatch(request.method, request.target, request.body)
        except Exception as exc:  # a bug in the proxy must not take the container down with it
            import traceback

            os.write(self.diagnostics, traceback.format_exc().encode(errors="replace"))
            return 500, error_body(f"proxy error: {exc!r}")


class HandOver:
    """`os._exit` for the action: the process would take the lines it printed with it, so the invoker is first told
    that the action ended (its connections close), and the exit waits until the side door has answered."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.served = threading.Event()
        self.pid = os.getpid()
        self.real_exit = os._exit

    def exit(self, status: int) -> NoReturn:
        if os.getpid() == self.pid:  # not in a child the action forked: that one just ends
            flush_std()
            self.server.disconnect()
            self.served.wait(HANDOVER_S)
        self.real_exit(status)


def serve_side_door(listener: socket.socket, proxy: Proxy, served: threading.Event) -> None:
    """POST /logs on the side door, one connection at a time, in this thread: the main thread may be stuck in
    the action for good (a timeout), and its output until then is exactly what the invoker wants."""
    while True:
        conn, _ = listener.accept()
        with conn:
            buf = bytearray()
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                request, used = parse_request(buf)
                if request is None:
                    continue
                if isinstance(request, int):
                    respond(conn, request, error_body(REASONS[request].decode()), False)
                    break
                del buf[:used]
                if request.target.partition("?")[0] != "/logs":
                    status, payload = 404, error_body(f"no such endpoint: {request.target}")
                elif request.method != "POST":
                    status, payload = 405, error_body(f"{request.method} is not allowed on {request.target}")
                else:
                    status, payload = proxy.fetch_logs(request.body)
                try:
                    respond(conn, status, payload, request.keep_alive)
                except OSError:
                    break
                if status == 200:
                    served.set()
                if not request.keep_alive:
                    break


def listen(path: str) -> socket.socket:
    """Bind and listen under a temporary name, then rename: the socket appears only once it accepts."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    listener.bind(temporary)
    os.chmod(temporary, 0o666)
    listener.listen(128)
    os.replace(temporary, path)
    return listener


def main(make_proxy: Callable[[LogCollector, str], Proxy] | None = None) -> None:
    """Serve until SIGTERM; `make_proxy` builds the endpoints' handler (the action loop proxy passes its own)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]  # the action must not import the proxy's directory by accident
    socket_path = os.environ.pop("SQUALL_PROXY_SOCKET", DEFAULT_SOCKET)
    limit = parse_limit(os.environ.pop("SQUALL_LOG_LIMIT_BYTES", ""), DEFAULT_LOG_LIMIT)
    real_exit = os._exit
    signal.signal(signal.SIGTERM, lambda *_: real_exit(0))  # as PID 1, SIGTERM is ignored without a handler
    side_door = listen(socket_path + SIDE_DOOR)  # first: the main socket's appearance means both are there
    listener = listen(socket_path)
    logs = LogCollector(limit)
    diagnostics = os.dup(2)
    logs.redirect()
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:  # each print reaches the pipe at once, so its log line gets its own time
        reconfigure(line_buffering=True)
    logs.start()
    proxy = (make_proxy or Proxy)(logs, os.getcwd())
    server = Server(listener, proxy, diagnostics)
    hand_over = HandOver(server)
    os._exit = hand_over.exit  # the action's own: its lines are handed over first
    threading.Thread(
        target=serve_side_door,
        args=(side_door, proxy, hand_over.served),
        name="squall-side-door",
        daemon=True,
    ).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
