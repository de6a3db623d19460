"""Squall's action loop proxy: one proxy for every loop language, driving a per-language launcher process.

The HTTP side, the log collection and the side door are python_proxy.py's (same contract, see its docstring).
What differs is where the action runs: not in this process, but in a *launcher*, as in OpenWhisk's ActionLoop
(openwhisk-api.md §3.4). /init writes the code out, compiles it where the language has a compile step, starts the
launcher and waits for its `{"ok":true}` on fd 3; /run writes one JSON line (the /run body) to the launcher's
stdin and answers with the one JSON line it writes back on fd 3. The launcher's stdout and stderr are the proxy's
fds 1 and 2, so its lines and its children's land in the activation's logs.

Environment (besides python_proxy's): SQUALL_LOOP_LANGUAGE (native, go, java, ruby, php, rust) and
SQUALL_MEMORY_MB (the container's memory limit, for the JVM's heap).

POST /init   as python_proxy, plus `value.artefact`: base64 of a zip of a previous compilation of the same code
             (the invoker keeps them by code hash), which skips the compile step.
POST /artefact  200 {"artefact": <base64 zip>} of this container's compilation, taken before the launcher
             started (so nothing the action does afterwards can change it); 404 if nothing was compiled.
POST /run    as python_proxy; 400 {"error":"command exited"} if the launcher ended, and 500 "no action defined
             yet" afterwards; 502 "The action did not return a dictionary or array." for a line that is not a
             JSON object or array.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import zipfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runtimes.proxy import python_proxy as base
else:  # in the container, the proxies' directory is on sys.path
    import python_proxy as base
if TYPE_CHECKING:
    from typing import Any, BinaryIO

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHERS = os.path.join(HERE, "launchers")
CACHE = "/tmp/.cache"  # compilers' caches: on the container's tmpfs, gone with it
JAVA_CLASSPATH = "/opt/squall/java:/usr/share/java/gson.jar"
CARGO_CONFIG = """[source.crates-io]
replace-with = "debian"
[source.debian]
directory = "/usr/share/cargo/registry"
[net]
offline = true
"""


class Action:
    """Where an action's files are: `root/src` (sources), `root/out` (what runs; the compile step's output)."""

    def __init__(self, root: str, main: str) -> None:
        self.root = root
        self.main = main
        self.src = os.path.join(root, "src")
        self.out = os.path.join(root, "out")
        os.mkdir(self.src)
        os.mkdir(self.out)


def unpack(code: str, binary: bool) -> tuple[bytes, zipfile.ZipFile | None]:
    """The code's bytes, and the zip they are when they are one."""
    if not binary:
        return code.encode(), None
    try:
        data = base64.b64decode(code)
    except (binascii.Error, ValueError) as exc:
        raise base.InitError(f"Cannot decode the action's base64 code: {exc}") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        return data, zipfile.ZipFile(io.BytesIO(data))
    return data, None


def extract(archive: zipfile.ZipFile, dest: str) -> None:
    archive.extractall(dest)
    for info in archive.infolist():  # zip tools keep the execute bits in the external attributes
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(os.path.join(dest, info.filename), mode | stat.S_IRUSR)


def write(path: str, data: bytes, mode: int = 0o644) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


# --- the languages: (prepare, compile) -> the launcher's command -------------------------------------------------


def prepare_native(action: Action, data: bytes, archive: zipfile.ZipFile | None) -> bool:
    """dockerskeleton: a script or binary `exec`, run once per activation with the JSON argument."""
    if archive is not None:
        extract(archive, action.out)
        if not os.path.isfile(os.path.join(action.out, "exec")):
            raise base.InitError("Zip file does not include 'exec'.")
        os.chmod(os.path.join(action.out, "exec"), 0o755)
    else:
        write(os.path.join(action.out, "exec"), data, 0o755)
    return False


def launch_native(action: Action) -> list[str]:
    return [sys.executable, os.path.join(LAUNCHERS, "native.py"), os.path.join(action.out, "exec")]


def prepare_script(entry: str) -> Any:
    def prepare(action: Action, data: bytes, archive: zipfile.ZipFile | None) -> bool:
        if archive is not None:
            extract(archive, action.out)
            if not os.path.isfile(os.path.join(action.out, entry)):
                raise base.InitError(f"Zip file does not include '{entry}'.")
        else:
            write(os.path.join(action.out, entry), data)
        return False

    return prepare


def launch_ruby(action: Action) -> list[str]:
    return ["ruby", os.path.join(LAUNCHERS, "launcher.rb"), os.path.join(action.out, "main.rb"), action.main]


def launch_php(action: Action) -> list[str]:
    return ["php", "-d", "display_errors=stderr", "-d", "log_errors=0",
            os.path.join(LAUNCHERS, "launcher.php"), action.out, action.main]  # fmt: skip


def prepare_go(action: Action, data: bytes, archive: zipfile.ZipFile | None) -> bool:
    """OpenWhisk's Go runtime: `package main` with `func Main(map[string]interface{}) map[string]interface{}`,
    as one file or a zip (with go.mod and a vendor/ directory: there is no network); a zip whose root holds an
    `exec` binary, or a plain binary, is taken as compiled already (it must speak the loop protocol itself)."""
    if archive is None and data.startswith(b"\x7fELF"):
        write(os.path.join(action.out, "exec"), data, 0o755)
        return False
    if archive is not None:
        extract(archive, action.src)
        if os.path.isfile(os.path.join(action.src, "exec")):
            shutil.copy(os.path.join(action.src, "exec"), os.path.join(action.out, "exec"))
            os.chmod(os.path.join(action.out, "exec"), 0o755)
            return False
    else:
        write(os.path.join(action.src, "main.go"), data)
    return True


def compile_go(action: Action) -> None:
    function = action.main[:1].upper() + action.main[1:]
    with open(os.path.join(LAUNCHERS, "launcher.go")) as f:
        launcher = f.read().replace("Main(", function + "(")
    write(os.path.join(action.src, "squall_launcher_.go"), launcher.encode())
    if not os.path.isfile(os.path.join(action.src, "go.mod")):
        write(os.path.join(action.src, "go.mod"), b"module action\n\ngo 1.19\n")
    env = {**os.environ, "GOCACHE": f"{CACHE}/go-build", "GOPATH": f"{CACHE}/go", "GOPROXY": "off",
           "GOFLAGS": "-mod=vendor" if os.path.isdir(os.path.join(action.src, "vendor")) else "-mod=mod",
           "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}  # fmt: skip
    run_compiler(
        ["go", "build", "-ldflags=-s -w", "-o", os.path.join(action.out, "exec"), "."], action.src, env
    )


def launch_exec(action: Action) -> list[str]:
    return [os.path.join(action.out, "exec")]


def prepare_java(action: Action, data: bytes, archive: zipfile.ZipFile | None) -> bool:
    """OpenWhisk's Java runtime takes a jar, with `main` naming the class. Squall also takes the source of one
    class (or a zip of .java files), compiled at init."""
    if archive is not None:
        names = archive.namelist()
        if any(n.endswith(".class") for n in names) or not any(n.endswith(".java") for n in names):
            write(os.path.join(action.out, "action.jar"), data)
            return False
        extract(archive, action.src)
        return True
    class_name = action.main.partition("#")[0].rpartition(".")[2] or "Main"
    write(os.path.join(action.src, f"{class_name}.java"), data)
    return True


def compile_java(action: Action) -> None:
    sources = [
        os.path.join(d, n) for d, _, files in os.walk(action.src) for n in files if n.endswith(".java")
    ]
    run_compiler(
        ["java", *jvm_options(), "-m", "jdk.compiler/com.sun.tools.javac.Main", "-nowarn", "-cp",
         JAVA_CLASSPATH, "-d", os.path.join(action.out, "classes"), *sorted(sources)],
        action.src, dict(os.environ),
    )  # fmt: skip


def jvm_options() -> list[str]:
    # The container's data rlimit is its memory limit, and it counts committed memory, touched or not: the heap
    # starts small (the JVM's default initial heap is 1/64 of the host's memory, all committed at once) and
    # may grow to half the limit, leaving room for metaspace, code and thread stacks (a process's reaper too).
    memory = base.parse_limit(os.environ.get("SQUALL_MEMORY_MB", ""), 256)
    return [f"-Xmx{max(memory // 2, 32)}m", "-Xms8m", "-Xss1m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:ReservedCodeCacheSize=32m", "-XX:MaxMetaspaceSize=96m", "-Xshare:auto"]  # fmt: skip


def launch_java(action: Action) -> list[str]:
    classpath = ":".join(
        [JAVA_CLASSPATH, os.path.join(action.out, "action.jar"), os.path.join(action.out, "classes")]
    )
    return ["java", *jvm_options(), "--add-opens", "java.base/java.util=ALL-UNNAMED", "-cp", classpath,
            "SquallLauncher", action.main]  # fmt: skip


def prepare_rust(action: Action, data: bytes, archive: zipfile.ZipFile | None) -> bool:
    """OpenWhisk's Rust runtime: a library crate `actions` whose `pub fn main(args: Value) -> Result<Value,
    Error>` uses serde_json; one file (src/lib.rs) or a zip of the crate (Cargo.toml, src/)."""
    crate = os.path.join(action.src, "action")
    os.makedirs(os.path.join(crate, "src"))
    if archive is not None:
        extract(archive, crate)
    else:
        write(os.path.join(crate, "src", "lib.rs"), data)
    if not os.path.isfile(os.path.join(crate, "Cargo.toml")):
        write(
            os.path.join(crate, "Cargo.toml"),
            b'[package]\nname = "actions"\nversion = "0.1.0"\nedition = "2021"\n\n'
            b'[dependencies]\nserde_json = "1"\n',
        )
    return True


def compile_rust(action: Action) -> None:
    launcher = os.path.join(action.src, "launcher")
    os.makedirs(os.path.join(launcher, "src"))
    with open(os.path.join(LAUNCHERS, "launcher.rs")) as f:
        write(
            os.path.join(launcher, "src", "main.rs"),
            f.read().replace("actions::main(", f"actions::{action.main}(").encode(),
        )
    write(
        os.path.join(launcher, "Cargo.toml"),
        b'[package]\nname = "squall-launcher"\nversion = "0.1.0"\nedition = "2021"\n\n'
        b'[dependencies]\nactions = { path = "../action" }\nserde_json = "1"\n\n'
        b"[profile.release]\nopt-level = 1\ndebug = false\nincremental = false\n",
    )
    home = f"{CACHE}/cargo"
    os.makedirs(home, exist_ok=True)
    write(os.path.join(home, "config.toml"), CARGO_CONFIG.encode())
    target = f"{CACHE}/target"
    env = {**os.environ, "CARGO_HOME": home, "CARGO_TARGET_DIR": target, "CARGO_INCREMENTAL": "0"}
    run_compiler(["cargo", "build", "--offline", "--release", "--quiet"], launcher, env)
    shutil.copy(os.path.join(target, "release", "squall-launcher"), os.path.join(action.out, "exec"))
    shutil.rmtree(target, ignore_errors=True)  # the tmpfs is small


def run_compiler(command: list[str], cwd: str, env: dict[str, str]) -> None:
    """Run a compile step; its output goes to the logs, a failure makes /init fail."""
    try:
        done = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise base.InitError(f"Cannot run the compiler {command[0]}: {exc}") from None
    if done.returncode != 0:
        raise base.InitError(f"The action did not compile ({command[0]} exited with {done.returncode}).")


LANGUAGES: dict[str, tuple[Any, Any, Any]] = {
    "native": (prepare_native, None, launch_native),
    "ruby": (prepare_script("main.rb"), None, launch_ruby),
    "php": (prepare_script("index.php"), None, launch_php),
    "go": (prepare_go, compile_go, launch_exec),
    "java": (prepare_java, compile_java, launch_java),
    "rust": (prepare_rust, compile_rust, launch_exec),
}


class LoopProxy(base.Proxy):
    """The three endpoints (and /artefact) in front of a launcher process."""

    def __init__(self, logs: base.LogCollector, workdir: str) -> None:
        super().__init__(logs, workdir)
        self.language = os.environ.pop("SQUALL_LOOP_LANGUAGE", "native")
        self.pid = 0
        self.requests: BinaryIO | None = None
        self.replies: BinaryIO | None = None
        self.artefact: bytes | None = None

    def dispatch(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        if target.partition("?")[0] == "/artefact" and method == "POST":
            if self.artefact is None:
                return 404, base.error_body("nothing was compiled")
            return 200, b'{"artefact":"%s"}' % base64.b64encode(self.artefact)
        return super().dispatch(method, target, body)

    def init(self, body: bytes) -> tuple[int, bytes]:
        if self.initialized:
            return 403, base.error_body("Cannot initialize the action more than once.")
        try:
            message = json.loads(body)
        except ValueError as exc:
            return 400, base.error_body(f"Error unmarshaling request: {exc}")
        value = message.get("value") if isinstance(message, dict) else None
        if not isinstance(value, dict):
            value = {}
        code, main = value.get("code"), value.get("main") or "main"
        if not isinstance(code, str) or not code:
            return 403, base.error_body("Missing main/no code to execute.")
        env = value.get("env")
        if isinstance(env, dict):
            self._init_env(env)
        try:
            self._start(code, bool(value.get("binary")), str(main), value.get("artefact"))
        except base.InitError as exc:
            print(exc, file=sys.stderr)
            return 502, base.CANNOT_START
        except Exception:
            import traceback

            traceback.print_exc()
            return 502, base.CANNOT_START
        finally:
            base.flush_std()
        self.initialized = True
        return 200, base.OK_BODY

    def _start(self, code: str, binary: bool, main: str, artefact: object) -> None:
        prepare, compile_step, launch = LANGUAGES[self.language]
        action = Action(base.fresh_dir(self.workdir), main)
        data, archive = unpack(code, binary)
        needs_compile = prepare(action, data, archive)
        if needs_compile and isinstance(artefact, str) and artefact:
            extract(zipfile.ZipFile(io.BytesIO(base64.b64decode(artefact))), action.out)
        elif needs_compile:
            compile_step(action)
            self.artefact = zip_tree(action.out)
        os.chdir(action.out)
        self._spawn(launch(action))
        assert self.replies is not None
        ack = self.replies.readline()
        if not ack.strip():
            self._stop()
            raise base.InitError("The action did not start (see the logs above).")

    def _spawn(self, command: list[str]) -> None:
        """Start the launcher with a stdin pipe and the replies pipe as its fd 3 (fds 1 and 2 are inherited:
        the log pipes). Everything else the proxy holds is close-on-exec."""
        stdin_r, stdin_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            self.pid = os.posix_spawnp(
                command[0], command, os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, replies_w, 3)],
            )  # fmt: skip
        except OSError as exc:
            os.close(stdin_w)
            os.close(replies_r)
            raise base.InitError(f"Cannot start the launcher {command[0]}: {exc}") from None
        finally:
            os.close(stdin_r)
            os.close(replies_w)
        self.requests = os.fdopen(stdin_w, "wb")
        self.replies = os.fdopen(replies_r, "rb")

    def _stop(self) -> None:
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self.pid, 0)
        for stream in (self.requests, self.replies):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.pid, self.requests, self.replies = 0, None, None

    def run(self, body: bytes) -> tuple[int, bytes]:
        requests, replies = self.requests, self.replies
        if requests is None or replies is None:
            return 500, base.error_body("no action defined yet")
        try:
            message = json.loads(body)
        except ValueError as exc:
            return 400, base.error_body(f"Error unmarshaling request: {exc}")
        if not isinstance(message, dict):
            return 400, base.error_body("Error unmarshaling request: not an object")
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            requests.write(line)
            requests.flush()
            reply = replies.readline()
        except OSError:
            reply = b""
        if not reply.endswith(b"\n"):
            self._stop()
            return 400, base.error_body("command exited")
        try:
            result = json.loads(reply)
        except ValueError:
            result = None
        if not isinstance(result, dict | list):
            return 502, base.NOT_DICT
        return 200, reply.rstrip(b"\n")


def zip_tree(root: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for directory, _, files in os.walk(root):
            for name in files:
                path = os.path.join(directory, name)
                archive.write(path, os.path.relpath(path, root))
    return buffer.getvalue()


if __name__ == "__main__":
    base.main(LoopProxy)
