"""Action containers on rootless Podman: create, start, destroy and sweep them, each one sandboxed.

Every container gets: its runtime image (by kind family, content-addressed tag), `--network none` (slirp4netns
egress only on request and where the host allows it), all capabilities dropped, no-new-privileges, a read-only
root with one small tmpfs at /tmp, rlimits (nofile, nproc, data), cgroup memory and pids limits where the host
delegates those controllers, the proxy directory mounted read-only at /squall/proxy and its own socket directory
mounted at /run/squall.

Fork bombs. Rootless Podman on cgroups v1 cannot set a pids limit, and RLIMIT_NPROC counts the processes of a
*user id* (per user namespace): all containers running as root inside the engine's user namespace would share one
budget, so one fork bomb would starve every other container. Each container therefore runs as its own user id
inside that namespace (a subordinate id on the host, `pool_policy.pick_uid`), which gives it its own RLIMIT_NPROC
budget. `userns_mode="auto"` (a user namespace per container) would do the same, but the engine silently ignores it
here. With nproc 512 a bomb stays far below the host's pid_max, and since a container is a session of its own, the
scheduler's autogroups give all its processes together one share of the CPU, not one share each. The proxy's
socket, /tmp and /dev/shm (both `tmpfs_mb`) are the only places it can write; the socket directory is made
read-only for it once the proxy listens.

Memory, processes, CPU, pausing: what the host offers (`HostFeatures.limits_by`, logged once at start).
- "podman": cgroup v2 with controllers delegated to the engine's user: the engine sets memory (= memory + swap),
  pids and CPU shares per container, and pauses idle containers itself.
- "invoker": cgroup v1 (the engine can do none of it rootless), but this process can write the v1 hierarchies
  (it runs as root): runtimes/cgroups.py sets the same limits and freezes idle containers.
- "rlimits": neither. RLIMIT_DATA (private writable memory of each process) stands in for the memory limit, and
  the per-container RLIMIT_NPROC is lowered (`nproc_rlimit_only`), so that a container's memory stays below
  nproc x memory limit. RLIMIT_AS would stop Node.js from starting, since V8 reserves large virtual ranges it never
  touches; RLIMIT_CPU counts CPU time over a process's life, so it would kill a warm container after enough
  honest runs: CPU is bounded by the run timeout and the per-session autogroup instead. Nothing pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import requests
from podman import PodmanClient
from podman.errors import APIError, ImageNotFound, NotFound

from broker.config import Settings
from broker.errors import BadRequest, InternalError, SquallError, Unavailable
from runtimes.cgroups import Limits, V1Cgroups, cpu_shares, open_v1, remove_pools
from runtimes.images import RECIPES, SYSTEM_PATH, PodmanUser, image_tag, resolve_podman_user
from runtimes.podman_service import PodmanService
from runtimes.proxy import install_proxies
from runtimes.uds_http import DEFAULT_MAX_BODY, UdsConnection, connect_when_ready

log = logging.getLogger(__name__)

POOL_LABEL = "squall.pool"
# "<pid>:<start time>" of the process that created the container: a dead owner's leftovers are swept.
OWNER_LABEL = "squall.owner"
SOCKET_DIR_LABEL = "squall.socket_dir"  # removed with the container by a sweep
PROXY_MOUNT = "/squall/proxy"
SOCKET_MOUNT = "/run/squall"
SOCKET_NAME = "proxy.sock"
MB = 1024 * 1024

# Node boots once when its stdout/stderr are FIFOs the proxy reads itself; started plainly, the Node
# proxy re-launches itself to get pipes, which costs a second Node boot (100-150 ms) on every cold start.
NODE_LOG_FIFOS = "/tmp/.o:/tmp/.e"
_NODE_WITH_FIFOS = 'mkfifo -m 600 /tmp/.o /tmp/.e && exec "$@" 1<>/tmp/.o 2<>/tmp/.e'
# Every other language runs on the action loop: one proxy (Python, in each of their images) and a launcher
# per language (runtimes/proxy/loop_proxy.py).
LOOP_FAMILIES = ("native", "go", "java", "ruby", "php", "rust")
PROXY_COMMANDS: dict[str, list[str]] = {
    "python": ["python3", f"{PROXY_MOUNT}/python_proxy.py"],
    "nodejs": ["sh", "-c", _NODE_WITH_FIFOS, "sh", "node", f"{PROXY_MOUNT}/node_proxy.js"],
    **{family: ["python3", f"{PROXY_MOUNT}/loop_proxy.py"] for family in LOOP_FAMILIES},
}


class Sandbox(msgspec.Struct, frozen=True, kw_only=True):
    """The limits every action container gets."""

    tmpfs_mb: int = 64
    nofile: int = 1024
    nproc: int = 512  # per container (each has its own user id): bounds a fork bomb well below pid_max
    # Where no cgroup limits memory, RLIMIT_NPROC is what bounds a container's memory (each process may hold its
    # RLIMIT_DATA): Node.js needs about a dozen tasks (threads count), Python a few; the rest is for children.
    nproc_rlimit_only: int = 64
    cpu_total_mb: int = 2048  # the pool's memory budget: a container's CPU shares are its part of it
    # Container user ids are picked in [uid_low, uid_high) of the engine's user namespace (its subuid range).
    uid_low: int = 10000
    uid_high: int = 60000
    log_size_bytes: int = MB  # the engine's own log of the container (the proxy's output, not the action's)


class HostFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """What the host's rootless engine can enforce, detected at start."""

    cgroup_version: str
    memory_limits: bool
    pids_limits: bool
    egress: bool
    egress_problem: str = ""  # why egress is unavailable
    cpu_limits: bool = False
    limits_by: str = "rlimits"  # "podman" (cgroup v2), "invoker" (cgroup v1 written by us) or "rlimits"
    pause: str = (
        ""  # how idle containers are paused: "podman", "freezer" (our cgroup v1 freezer) or "" (never)
    )

    def describe(self, box: Sandbox) -> str:
        """One line for the log: what a container's limits really are on this host."""
        if self.limits_by == "rlimits":
            enforced = (
                f"rlimits only: nproc {min(box.nproc, box.nproc_rlimit_only)} and data = memory limit per process, "
                "no CPU limit besides the timeout"
            )
        else:
            kinds = [k for k, on in (("memory+swap", self.memory_limits), ("pids", self.pids_limits),
                                     ("cpu shares", self.cpu_limits)) if on]  # fmt: skip
            enforced = f"cgroup limits set by {self.limits_by}: {', '.join(kinds) or 'none'}"
        pausing = (
            f"idle containers paused by {self.pause}" if self.pause else "idle containers are not paused"
        )
        return f"cgroup {self.cgroup_version or 'unknown'}; {enforced}; {pausing}"


class Container(msgspec.Struct, frozen=True, kw_only=True):
    """A started action container."""

    id: str
    name: str
    family: str
    memory_mb: int
    uid: int
    socket_dir: str
    network: bool = False
    cgroup: str = ""  # its group's name in each of the invoker's cgroup-v1 controllers, if any

    @property
    def socket_path(self) -> str:
        return f"{self.socket_dir}/{SOCKET_NAME}"


class PodmanBackend:
    """`async with PodmanBackend(settings, pool_id) as backend:` starts (or reuses) the rootless API service,
    installs the proxies, and removes what a previous, dead owner left behind; on exit every container labelled
    with `pool_id` is removed. `pool_id` must be unique among the live pools of the host."""

    def __init__(
        self,
        settings: Settings,
        pool_id: str,
        sandbox: Sandbox | None = None,
    ) -> None:
        if (
            not pool_id
            or len(pool_id) > 64
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in pool_id)
        ):
            raise BadRequest(f"invalid pool id {pool_id!r}: 1-64 letters, digits, '-', '_' or '.'")
        self.settings = settings
        self.pool_id = pool_id
        self.sandbox = sandbox or Sandbox()
        self.features = HostFeatures(cgroup_version="", memory_limits=False, pids_limits=False, egress=False)
        self.user: PodmanUser | None = None
        self.owner = _owner_token(os.getpid())
        self._service: PodmanService | None = None
        self._client: PodmanClient | None = None
        # podman-py is synchronous: its calls run on a few threads of our own, so that a slow engine cannot
        # starve the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="podman")
        self._images: dict[str, str] = {}
        self._reviving = asyncio.Lock()
        self._pool_dir: Path | None = (
            None  # <runtime dir>/squall/pools/<pool>: one socket directory per container
        )
        self._proxy_dir = Path()
        self._cgroups: V1Cgroups | None = None
        self._pause_broken = False

    async def __aenter__(self) -> PodmanBackend:
        self.user = resolve_podman_user(self.settings.podman_user)
        service = PodmanService(self.settings)
        await service.__aenter__()
        self._service = service
        try:
            self._client = PodmanClient(base_url=service.base_url)
            info = await self._call(self._client.info)
            self.features = detect_features(info, self.user)
            if self.features.cgroup_version == "v1":
                self._cgroups = await asyncio.to_thread(open_v1, _short(self.pool_id))
                if self._cgroups is not None:
                    self.features = with_v1_cgroups(self.features, self._cgroups.controllers)
            log.info("container sandbox: %s", self.features.describe(self.sandbox))
            runtime = Path(self.user.runtime_dir, "squall")
            self._proxy_dir = await asyncio.to_thread(self._install_proxy, runtime / "proxy")
            pool_dir = runtime / "pools" / _short(self.pool_id)
            dead_pools = await asyncio.to_thread(self._prepare_pool_dir, pool_dir)
            self._pool_dir = pool_dir
            await self.sweep()
            if self._cgroups is not None:
                await asyncio.to_thread(remove_pools, self._cgroups, dead_pools)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.sweep()
            if self._pool_dir is not None:
                await asyncio.to_thread(shutil.rmtree, self._pool_dir, True)
            if self._cgroups is not None:
                await asyncio.to_thread(self._cgroups.close)
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._client is not None:
            # Before the service stops: its graceful shutdown waits for open connections.
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._service is not None:
            service, self._service = self._service, None
            await service.__aexit__(None, None, None)

    # --- containers ---------------------------------------------------------------------------------------

    async def start(self, family: str, memory_mb: int, uid: int, *, network: bool = False) -> Container:
        """Create and start a container of `family`; its proxy is not necessarily listening yet."""
        if network and not self.features.egress:
            raise BadRequest(
                f"Network egress was requested, but this host cannot provide it: {self.features.egress_problem}."
            )
        image = await self._image(family)
        assert self._pool_dir is not None, "start() needs an entered backend"
        token = secrets.token_hex(4)
        name = f"squall-{self.pool_id}-{token}"
        socket_dir = self._pool_dir / token  # short: a socket path must fit in 107 bytes
        await asyncio.to_thread(self._make_socket_dir, socket_dir)
        spec = self.container_spec(
            name,
            family,
            image=image,
            memory_mb=memory_mb,
            uid=uid,
            socket_dir=str(socket_dir),
            network=network,
        )
        # The engine calls run in threads that a cancellation cannot stop: a container could appear after we
        # gave up on it. So they run in a task of their own, and a cancelled start waits for it, then removes.
        cgroup = token if self._cgroups is not None else ""
        creating = asyncio.ensure_future(self._create_and_start(spec, cgroup, memory_mb))
        try:
            container_id = await asyncio.shield(creating)
        except BaseException:
            with contextlib.suppress(BaseException):
                await creating
            await self._remove(name, cgroup)
            await asyncio.to_thread(shutil.rmtree, socket_dir, True)
            raise
        return Container(
            id=container_id, name=name, family=family, memory_mb=memory_mb, uid=uid,
            socket_dir=str(socket_dir), network=network, cgroup=cgroup,
        )  # fmt: skip

    async def _create_and_start(self, spec: dict[str, Any], cgroup: str, memory_mb: int) -> str:
        created = await self._api("post", "/containers/create", data=json.dumps(spec))
        await self._api("post", f"/containers/{created['Id']}/start")
        if cgroup and self._cgroups is not None:
            # Before its proxy listens, so before any action code: all it will ever start is in the group.
            attrs = await self._api("get", f"/containers/{created['Id']}/json")
            pid = int(attrs.get("State", {}).get("Pid") or 0)
            limits = cgroup_limits(self.sandbox, memory_mb)
            try:
                if pid > 0:
                    await asyncio.to_thread(self._cgroups.attach, cgroup, pid, limits)
            except ProcessLookupError:
                pass
            except OSError as exc:
                raise InternalError(f"cannot put a new container in its cgroup: {exc}") from None
            # No process (pid 0, or gone by now): it exited at once and runs nothing, so there is nothing to
            # limit; waiting for its proxy reports the exit as any other container's.
        return str(created["Id"])

    def container_spec(
        self, name: str, family: str, *, image: str, memory_mb: int, uid: int, socket_dir: str, network: bool
    ) -> dict[str, Any]:
        """The engine's container spec (libpod SpecGenerator) of one action container."""
        box = self.sandbox
        command = list(PROXY_COMMANDS[family])
        if family == "nodejs":
            # V8 sizes its heap from the host's memory; a heap limit under the data rlimit makes it collect
            # garbage before the kernel refuses it memory.
            command.insert(command.index("node") + 1, f"--max-old-space-size={max(memory_mb * 3 // 4, 32)}")
        limits = engine_limits(self.features, box, memory_mb)
        nproc, data = rlimits(self.features, box, memory_mb)
        return {
            "name": name,
            "image": image,
            "command": command,
            "labels": {POOL_LABEL: self.pool_id, OWNER_LABEL: self.owner, SOCKET_DIR_LABEL: socket_dir},
            "user": f"{uid}:{uid}",
            "work_dir": "/tmp",
            "env": {
                "SQUALL_PROXY_SOCKET": f"{SOCKET_MOUNT}/{SOCKET_NAME}",
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                **({"SQUALL_PROXY_LOG_FIFOS": NODE_LOG_FIFOS} if family == "nodejs" else {}),
                **(
                    {"SQUALL_LOOP_LANGUAGE": family, "SQUALL_MEMORY_MB": str(memory_mb)}
                    if family in LOOP_FAMILIES
                    else {}
                ),
            },
            "netns": {"nsmode": "slirp4netns" if network else "none"},
            "cap_drop": ["ALL"],
            "no_new_privileges": True,
            "read_only_filesystem": True,
            "read_write_tmpfs": False,  # only our /tmp: not also /run and /var/tmp
            "shm_size": box.tmpfs_mb * MB,
            "mounts": [
                {
                    "destination": "/tmp",
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["rw", "nosuid", "nodev", f"size={box.tmpfs_mb}m", "mode=1777"],
                },
                {
                    "destination": PROXY_MOUNT,
                    "type": "bind",
                    "source": str(self._proxy_dir),
                    "options": ["ro", "nosuid", "nodev"],
                },
                {
                    "destination": SOCKET_MOUNT,
                    "type": "bind",
                    "source": socket_dir,
                    "options": ["rw", "nosuid", "nodev", "noexec"],
                },
            ],
            "r_limits": [
                {"type": "nofile", "soft": box.nofile, "hard": box.nofile},
                {"type": "nproc", "soft": nproc, "hard": nproc},
                {"type": "data", "soft": data, "hard": data},
            ],
            "resource_limits": limits,
            "oom_score_adj": 1000,  # under memory pressure, actions go first
            "stop_signal": 9,
            "stop_timeout": 0,
            "log_configuration": {"driver": "k8s-file", "size": box.log_size_bytes},
        }

    async def connect(
        self, container: Container, timeout_s: float, *, max_body: int = DEFAULT_MAX_BODY
    ) -> UdsConnection:
        """Wait until the proxy listens, then lock its socket directory (the action cannot write there) and
        return a connection. InternalError if the container exits first or its proxy is not up in `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        connecting = asyncio.ensure_future(
            connect_when_ready(container.socket_path, deadline, max_body=max_body)
        )
        try:
            while True:
                done, _ = await asyncio.wait({connecting}, timeout=0.25)
                if done:
                    break
                if not await self.running(container):
                    raise InternalError(
                        f"the container of {container.family} exited before its proxy listened"
                    )
        finally:
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
        try:
            connection = connecting.result()
        except TimeoutError:
            raise InternalError(
                f"the proxy of a new {container.family} container did not listen within {timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise InternalError(
                f"cannot connect to the proxy of a new {container.family} container: {exc}"
            ) from None
        await asyncio.to_thread(os.chmod, container.socket_dir, 0o755)
        return connection

    async def running(self, container: Container) -> bool:
        try:
            attrs = await self._api("get", f"/containers/{container.id}/json")
        except Unavailable:
            raise
        except SquallError:
            return False
        return bool(attrs.get("State", {}).get("Running"))

    async def destroy(self, container: Container, *, paused: bool = False) -> None:
        """Kill and remove the container (paused or not), its socket directory and its cgroups; a container
        already gone is fine."""
        if paused and self.features.pause == "podman":
            with contextlib.suppress(SquallError):
                await self._api("post", f"/containers/{container.id}/unpause")
        await self._remove(container.id, container.cgroup)
        await asyncio.to_thread(shutil.rmtree, container.socket_dir, True)

    async def pause(self, container: Container) -> bool:
        """Freeze an idle container's processes (they hold their memory, use no CPU); whether it is paused. A
        host where pausing fails is told once in the log, and then never asked again."""
        mode = self.features.pause
        if not mode or self._pause_broken:
            return False
        try:
            if mode == "freezer" and self._cgroups is not None:
                await asyncio.to_thread(self._cgroups.freeze, container.cgroup)
            else:
                await self._api("post", f"/containers/{container.id}/pause")
        except (FileNotFoundError, _Gone):
            return False  # the container is gone: the pool finds out on its next use
        except (OSError, SquallError) as exc:
            self._pause_broken = True
            log.warning("idle containers cannot be paused here (%s): they keep running until reaped", exc)
            return False
        return True

    @property
    def can_pause(self) -> bool:
        return bool(self.features.pause) and not self._pause_broken

    async def resume(self, container: Container) -> None:
        """Thaw a paused container; InternalError if it cannot be (the pool then replaces it)."""
        try:
            if self.features.pause == "freezer" and self._cgroups is not None:
                await asyncio.to_thread(self._cgroups.thaw, container.cgroup)
            else:
                await self._api("post", f"/containers/{container.id}/unpause")
        except OSError as exc:
            raise InternalError(f"cannot resume a paused container: {exc}") from None

    async def paused(self, container: Container) -> bool:
        """Whether the container's processes are frozen now (for tests and diagnostics)."""
        if self.features.pause == "freezer" and self._cgroups is not None:
            return await asyncio.to_thread(self._cgroups.frozen, container.cgroup)
        attrs = await self._api("get", f"/containers/{container.id}/json")
        return bool(attrs.get("State", {}).get("Paused"))

    async def _remove(self, ref: str, cgroup: str = "") -> None:
        # SIGKILL first (PID 1 ignores SIGTERM), then remove: 30-80 ms, where a forced remove alone takes
        # 115 ms even with a zero stop timeout. Killing a container that is not running is an error to ignore.
        if not ref:
            return
        cgroups = self._cgroups if cgroup else None
        if cgroups is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(cgroups.thaw, cgroup)  # a frozen process cannot even die
        with contextlib.suppress(SquallError):
            await self._api("post", f"/containers/{ref}/kill", params={"signal": "9"})
        with contextlib.suppress(_Gone):
            await self._api("delete", f"/containers/{ref}", params={"force": "true", "v": "true"})
        if cgroups is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(cgroups.remove, cgroup)

    async def sweep(self) -> int:
        """Remove this pool's containers and those of pools whose owner process is gone; how many."""
        listed = await self._api(
            "get", "/containers/json", params={"all": "true", "filters": json.dumps({"label": [POOL_LABEL]})}
        )
        doomed = [
            c
            for c in listed
            if (c.get("Labels") or {}).get(POOL_LABEL) == self.pool_id
            or not owner_alive((c.get("Labels") or {}).get(OWNER_LABEL, ""))
        ]
        removals = await asyncio.gather(*(self._remove(c["Id"]) for c in doomed), return_exceptions=True)
        for container, outcome in zip(doomed, removals, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome
            if outcome is not None:
                # Another invoker sweeping the same dead pool at that moment (the engine then fails one of the
                # two removals), or the engine failing one: left for the next sweep, not a failed start or exit.
                log.warning("removing container %s failed: %s", container["Id"][:12], outcome)
        pools = self._pool_dir.parent if self._pool_dir is not None else None
        for c in doomed:
            socket_dir = Path((c.get("Labels") or {}).get(SOCKET_DIR_LABEL, ""))
            if socket_dir.parent.parent == pools:  # only ever a directory of the kind we make
                await asyncio.to_thread(shutil.rmtree, socket_dir, True)
        return len(doomed)

    async def pool_containers(self) -> list[str]:
        """Ids of the engine's containers labelled with this pool (for tests and diagnostics)."""
        listed = await self._api(
            "get",
            "/containers/json",
            params={"all": "true", "filters": json.dumps({"label": [f"{POOL_LABEL}={self.pool_id}"]})},
        )
        return [c["Id"] for c in listed]

    # --- plumbing -----------------------------------------------------------------------------------------

    async def available_families(self, wanted: tuple[str, ...]) -> tuple[str, ...]:
        """Those of `wanted` whose image this host has: a family without one is not offered (and said)."""
        found = []
        for family in wanted:
            try:
                await self._image(family)
            except Unavailable as exc:
                log.warning("runtime %s is not offered: %s", family, exc)
                continue
            found.append(family)
        return tuple(found)

    async def _image(self, family: str) -> str:
        if family in self._images:
            return self._images[family]
        if family not in RECIPES or family not in PROXY_COMMANDS:
            raise BadRequest(f"no runtime image for {family!r}")
        tag = image_tag(RECIPES[family])
        assert self._client is not None
        if not await self._call(self._client.images.exists, tag):
            raise Unavailable(f"The runtime image {tag} is missing: run `make images`.")
        self._images[family] = tag
        return tag

    async def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call of the engine's REST API; podman and connection errors become broker.errors."""
        assert self._client is not None
        api = self._client.api

        def call() -> Any:
            response = getattr(api, method)(path, **kwargs)
            response.raise_for_status()
            return response.json() if response.content else None

        return await self._call(call)

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run a podman-py call on our threads. If the API service is gone (it may have been another process's,
        or it crashed), start it again and retry once: the containers keep running without it."""
        try:
            return await self._call_once(fn, *args)
        except _ServiceDown:
            await self._revive()
            return await self._call_once(fn, *args)

    async def _call_once(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args))
        except (ImageNotFound, NotFound) as exc:
            raise _Gone(_explain(exc)) from None
        except APIError as exc:
            if exc.response is None:  # no answer at all: the service is down
                raise _ServiceDown(f"the Podman service does not answer: {_explain(exc)}") from None
            raise InternalError(f"Podman: {_explain(exc)}") from None
        except requests.RequestException as exc:
            raise _ServiceDown(f"the Podman service does not answer: {exc}") from None

    async def _revive(self) -> None:
        async with self._reviving:
            if self._service is not None and not await self._service.ping():
                await (
                    self._service.__aenter__()
                )  # reuses one that answers, or starts one as the engine's user

    def _install_proxy(self, dest: Path) -> Path:
        assert self.user is not None
        _ensure_dir(dest.parent, self.user, 0o755)
        return install_proxies(dest, self.user.uid, self.user.gid)

    def _prepare_pool_dir(self, pool_dir: Path) -> list[str]:
        """Make the pool's directory; the names of the dead pools whose directories it removed."""
        assert self.user is not None
        _ensure_dir(pool_dir.parent, self.user, 0o755)
        # Leftovers of a previous life of this pool, and of pools whose owner died.
        shutil.rmtree(pool_dir, ignore_errors=True)
        dead: list[str] = []
        for other in pool_dir.parent.iterdir():
            owner = other / "owner"
            with contextlib.suppress(OSError):
                if not owner_alive(owner.read_text()):
                    shutil.rmtree(other, ignore_errors=True)
                    dead.append(other.name)
        _ensure_dir(pool_dir, self.user, 0o755)
        owner_file = pool_dir / "owner"
        owner_file.write_text(self.owner)
        _chown(owner_file, self.user)
        return dead

    def _make_socket_dir(self, path: Path) -> None:
        assert self.user is not None
        # Writable by the container's own user id (not the directory's owner) until its proxy listens.
        _ensure_dir(path, self.user, 0o777)


class _ServiceDown(Unavailable):
    """The engine's API service does not answer."""


class _Gone(InternalError):
    """The engine does not know the container or image."""


def detect_features(info: dict[str, Any], user: PodmanUser) -> HostFeatures:
    """What the rootless engine can enforce, from its `info` and the host's /dev/net/tun."""
    host = info.get("host", {})
    version = str(host.get("cgroupVersion", ""))
    controllers = set(host.get("cgroupControllers") or [])
    egress, problem = egress_support(user)
    v2 = version == "v2"
    return HostFeatures(
        cgroup_version=version,
        memory_limits=v2 and "memory" in controllers,
        pids_limits=v2 and "pids" in controllers,
        cpu_limits=v2 and "cpu" in controllers,
        limits_by="podman" if v2 and controllers & {"memory", "pids", "cpu"} else "rlimits",
        # Freezing is part of cgroup v2 itself (cgroup.freeze), given a delegated group of the engine's own.
        pause="podman" if v2 and controllers else "",
        egress=egress,
        egress_problem=problem,
    )


def with_v1_cgroups(features: HostFeatures, controllers: frozenset[str]) -> HostFeatures:
    """The features once this process holds groups in the v1 `controllers` (runtimes/cgroups.py)."""
    return msgspec.structs.replace(
        features,
        memory_limits="memory" in controllers,
        pids_limits="pids" in controllers,
        cpu_limits="cpu" in controllers,
        limits_by="invoker",
        pause="freezer" if "freezer" in controllers else "",
    )


def engine_limits(features: HostFeatures, box: Sandbox, memory_mb: int) -> dict[str, Any]:
    """The OCI resource limits the engine sets itself (cgroup v2 only)."""
    limits: dict[str, Any] = {}
    if features.limits_by != "podman":
        return limits
    if features.memory_limits:
        limits["memory"] = {"limit": memory_mb * MB, "swap": memory_mb * MB}
    if features.pids_limits:
        limits["pids"] = {"limit": box.nproc}
    if features.cpu_limits:
        limits["cpu"] = {"shares": cpu_shares(memory_mb, box.cpu_total_mb)}
    return limits


def cgroup_limits(box: Sandbox, memory_mb: int) -> Limits:
    """The limits of a container's own cgroup-v1 groups (the same as the engine's on cgroup v2)."""
    return Limits(
        memory_bytes=memory_mb * MB, pids=box.nproc, cpu_shares=cpu_shares(memory_mb, box.cpu_total_mb)
    )


def rlimits(features: HostFeatures, box: Sandbox, memory_mb: int) -> tuple[int, int]:
    """(RLIMIT_NPROC, RLIMIT_DATA bytes) of a container. Without a cgroup memory limit, every process may hold up
    to RLIMIT_DATA, so the process limit is what bounds the container's memory: it is lowered to
    `nproc_rlimit_only`, which keeps a container under nproc_rlimit_only x its memory limit."""
    nproc = (
        box.nproc
        if features.memory_limits and features.pids_limits
        else min(box.nproc, box.nproc_rlimit_only)
    )
    return nproc, memory_mb * MB


def egress_support(user: PodmanUser, tun: str = "/dev/net/tun") -> tuple[bool, str]:
    """Rootless egress needs slirp4netns and a /dev/net/tun the engine's user can open read-write."""
    if shutil.which("slirp4netns", path=SYSTEM_PATH) is None:
        return False, "slirp4netns is not installed"
    try:
        st = os.stat(tun)
    except OSError:
        return False, f"{tun} does not exist"
    mode = st.st_mode
    groups = {user.gid, *os.getgrouplist(user.name, user.gid)}
    usable = (
        (st.st_uid == user.uid and mode & stat.S_IRUSR and mode & stat.S_IWUSR)
        or (st.st_gid in groups and mode & stat.S_IRGRP and mode & stat.S_IWGRP)
        or (mode & stat.S_IROTH and mode & stat.S_IWOTH)
    )
    if not usable:
        return False, f"{tun} is not readable and writable by the user {user.name!r}"
    return True, ""


def _short(pool_id: str) -> str:
    """The pool's directory name: the id itself, or a digest of a long one (socket paths are short)."""
    return pool_id if len(pool_id) <= 24 else hashlib.sha256(pool_id.encode()).hexdigest()[:16]


def _owner_token(pid: int) -> str:
    return f"{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot: with the pid, it names one process for good."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat_line.rsplit(")", 1)[-1].split()
    return "" if fields[0] == "Z" else fields[19]


def owner_alive(token: str) -> bool:
    """Whether the process named by an owner token ("<pid>:<start time>") still runs."""
    pid, _, started = token.strip().partition(":")
    if not pid.isdigit() or not started:
        return False
    return _start_time(int(pid)) == started


def _explain(exc: APIError) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _ensure_dir(path: Path, user: PodmanUser, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    _chown(path, user)


def _chown(path: Path, user: PodmanUser) -> None:
    # The engine's user must own what it mounts; when we are that user already, there is nothing to do.
    if os.geteuid() == 0:
        os.chown(path, user.uid, user.gid)
