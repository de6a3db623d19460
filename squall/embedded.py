"""Embedded dev servers (nats-server, nx-27017) as child processes that never outlive their context."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from broker.errors import Unavailable

START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
# Attempts when we picked the port ourselves: another process may grab it between probe and bind.
AUTO_PORT_ATTEMPTS = 3

_PR_SET_PDEATHSIG = 1
try:
    # Loaded before any fork: the child must not need the dynamic loader between fork and exec.
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:  # pragma: no cover - exotic libc
    _libc = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; the caller must tolerate losing a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str:
    """The console script next to our interpreter (the venv's bin) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"cannot find the `{name}` executable next to {sys.executable} or on PATH")
    return found


def die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it when we die, even by SIGKILL.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class _EmbeddedServer:
    """Start a server binary in its own process group, wait until it answers, stop the whole group on exit."""

    binary = ""
    scheme = ""
    # True when the server binds a free port itself (port 0) and tells us which: no race to lose.
    picks_own_port = False

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._requested_port = port or None
        self.port = 0
        self.pid: int | None = None
        self.startup_s = 0.0
        self._proc: asyncio.subprocess.Process | None = None
        self._log_path = self.data_dir / f"{self.binary}.out"

    def _command(self, executable: str) -> list[str]:
        raise NotImplementedError

    async def _ready(self) -> bool:
        """One readiness probe; False means 'not yet'."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Clear what a previous, killed instance may have left in `data_dir`."""

    @property
    def address(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        executable = find_binary(self.binary)
        attempts = 1 if self._requested_port or self.picks_own_port else AUTO_PORT_ATTEMPTS
        started = time.monotonic()
        for attempt in range(attempts):
            self.port = self._requested_port or (0 if self.picks_own_port else free_port(self.host))
            try:
                await self._start(executable)
            except Unavailable:
                if attempt + 1 == attempts:
                    raise
                continue
            except BaseException:
                await self._stop()
                raise
            break
        self.startup_s = time.monotonic() - started
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _start(self, executable: str) -> None:
        with self._log_path.open("wb") as out:
            # Output goes to a file, not a pipe: an unread pipe would block a chatty server.
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(executable),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # own process group: stop reaches any grandchild too
                preexec_fn=die_with_parent,
            )
        self.pid = self._proc.pid
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self._proc.returncode is not None:
                code = self._proc.returncode
                await self._stop()
                raise Unavailable(self._failure(f"exited with code {code}"))
            if await self._ready():
                return
            if time.monotonic() > deadline:
                await self._stop()
                raise Unavailable(self._failure(f"not ready after {START_DEADLINE_S:.0f} s"))
            await asyncio.sleep(0.05)

    def _failure(self, what: str) -> str:
        last = _last_line(self._log_path)
        where = f"{self.host}:{self.port}" if self.port else f"a free port on {self.host}"
        return f"embedded {self.binary} on {where} {what}" + (f": {last}" if last else "")

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session made the child its group's leader
        _killpg(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_DEADLINE_S)
        except TimeoutError:
            _killpg(pgid, signal.SIGKILL)
            await proc.wait()
        except BaseException:
            # Cancelled mid-stop: still leave nothing behind, the child watcher reaps it.
            _killpg(pgid, signal.SIGKILL)
            raise
        finally:
            # Stragglers the leader left in its group (it is gone, so they would be orphans).
            _killpg(pgid, signal.SIGKILL)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class EmbeddedNats(_EmbeddedServer):
    """`nats-server` with JetStream on file storage under `data_dir`."""

    binary = "nats-server"
    scheme = "nats"
    picks_own_port = True

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        sync_interval: str = "",
        authenticated: bool = False,
    ) -> None:
        super().__init__(data_dir, port, host)
        # JetStream's fsync policy: "" keeps nats-server's (every 2 minutes: an acknowledged message survives
        # a crash of the process, not of the machine); "always" syncs before every acknowledgement.
        self.sync_interval = sync_interval
        # A user and password of this data dir (standalone): loopback is shared by every local user, and
        # without them any of them could read keys' hashes, action code and activations off NATS.
        self.credentials = nats_credentials(self.data_dir) if authenticated else None

    @property
    def url(self) -> str:
        """The client URL, with the credentials when the server requires them (never log it: `redact`)."""
        if self.credentials is None:
            return self.address
        user, password = self.credentials
        return f"{self.scheme}://{user}:{password}@{self.host}:{self.port}"

    def _command(self, executable: str) -> list[str]:
        store = self.data_dir / "jetstream"
        # `-p -1` lets the server pick a free port; it reports it in `<ports dir>/nats-server_<pid>.ports`
        # once its listeners are up, which also proves the port belongs to *our* process.
        port = str(self.port or -1)
        return [
            executable,
            "-js",
            "-sd",
            str(store),
            "-a",
            self.host,
            "-p",
            port,
            "--ports_file_dir",
            str(self.data_dir),
            *self._config_args(),
        ]

    def _config_args(self) -> list[str]:
        """`-c nats.conf` for what only a config file can say (the fsync policy, the credentials); nothing
        otherwise. The file holds the password, so it is written 0600 like the credentials file."""
        lines: list[str] = []
        if self.sync_interval:
            lines.append(f'jetstream {{\n  sync_interval: "{self.sync_interval}"\n}}')
        if self.credentials is not None:
            user, password = self.credentials
            lines.append(f'authorization {{\n  user: "{user}"\n  password: "{password}"\n}}')
        if not lines:
            return []
        config = self.data_dir / "nats.conf"
        write_private(config, "\n".join(lines) + "\n")
        return ["-c", str(config)]

    async def _ready(self) -> bool:
        port = self._reported_port()
        if port is None:
            return False
        self.port = port
        # The INFO line proves nats-server is talking on it.
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 0.5)
        except (OSError, TimeoutError):
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), 1.0)
        except (OSError, TimeoutError):
            line = b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return line.startswith(b"INFO ")

    def _prepare(self) -> None:
        # A ports file survives only a killed server; one whose pid got reused would mislead `_ready`.
        for stale in self.data_dir.glob("nats-server_*.ports"):
            stale.unlink(missing_ok=True)

    def _reported_port(self) -> int | None:
        try:
            ports = json.loads((self.data_dir / f"nats-server_{self.pid}.ports").read_text())
            port: int | None = urlsplit(ports["nats"][0]).port
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None  # not written yet (or half-written)
        return port


NATS_CREDENTIALS_FILE = "nats-credentials.json"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from its creation, never readable in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def nats_credentials(data_dir: Path) -> tuple[str, str]:
    """The embedded NATS user and password of a data dir: made on its first start, kept in a 0600 file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / NATS_CREDENTIALS_FILE
    try:
        found = json.loads(path.read_text())
        return str(found["user"]), str(found["password"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    user, password = "squall", secrets.token_hex(24)
    write_private(path, json.dumps({"user": user, "password": password}))
    return user, password


def _clear_stale_pid_file(pid_file: Path) -> None:
    """nx-27017 refuses to start while its pid file names a live process, even an unrelated one that
    inherited the pid after a crash; only a live nx-27017 should block us."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        cmdline = b""
    if b"nx-27017" not in cmdline and b"nx_27017" not in cmdline:
        pid_file.unlink(missing_ok=True)


class EmbeddedMongo(_EmbeddedServer):
    """`nx-27017` (MongoDB wire protocol on SQLite) with one db file per logical database under `data_dir`."""

    binary = "nx-27017"
    scheme = "mongodb"

    @property
    def uri(self) -> str:
        return f"{self.address}/"

    def _prepare(self) -> None:
        _clear_stale_pid_file(self.data_dir / "nx-27017.pid")

    def _command(self, executable: str) -> list[str]:
        # Per-instance log and pid files: the defaults live in /tmp and would collide between instances.
        return [
            executable,
            "--data-dir",
            str(self.data_dir / "db"),
            "--host",
            self.host,
            "-p",
            str(self.port),
            "--log-file",
            str(self.data_dir / "nx-27017.log"),
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
        ]

    async def _ready(self) -> bool:
        # A cheap TCP probe first: building a client per poll would dominate the start time.
        if not await _tcp_open(self.host, self.port):
            return False
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            self.uri, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000, directConnection=True
        )
        try:
            # serverStatus names the pid behind the port: another server squatting it must not pass as us.
            status = await client.admin.command("serverStatus")
        except PyMongoError:
            return False
        finally:
            await client.close()
        return bool(status.get("pid") == self.pid)
