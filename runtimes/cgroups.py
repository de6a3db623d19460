"""Cgroup-v1 limits the invoker sets itself where rootless Podman cannot: memory (+swap), pids, CPU shares, freezer.

Rootless Podman on a cgroup-v1 host creates no cgroup for its containers ("this container does not have a
cgroup"), so it can neither limit nor pause them. An invoker that runs as root (the usual set-up: root drives the
rootless engine through its socket) can still write the v1 hierarchies: it makes one directory per controller for
its pool (`<mount>/<its own cgroup>/squall-<pool>/`) and one below it per container, sets the limits there and moves
the container's first process in before any action code runs; everything that process starts inherits the group.
Where the hierarchies cannot be written (not root, read-only cgroupfs), `open_v1` returns None and the sandbox
falls back to rlimits (see podman_backend).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids", "cpu", "freezer")
# The weight Docker and OpenWhisk share out between containers (ContainerPoolConfig.cpuShare).
TOTAL_SHARES = 1024
MIN_SHARES = 2


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one container's group enforces."""

    memory_bytes: int  # memory and memory + swap: a container cannot swap past its limit
    pids: int  # tasks (processes and threads) in the group
    cpu_shares: int


def cpu_shares(memory_mb: int, pool_memory_mb: int) -> int:
    """OpenWhisk's CPU share of a container: the pool's 1024 shares in proportion to its memory limit, so that
    under contention an action gets CPU as it pays for memory; never below the kernel's minimum of 2."""
    if pool_memory_mb <= 0:
        return TOTAL_SHARES
    return max(MIN_SHARES, min(TOTAL_SHARES, TOTAL_SHARES * memory_mb // pool_memory_mb))


def v1_mounts(mountinfo: str) -> dict[str, Path]:
    """Controller -> mount point of each cgroup-v1 hierarchy, from /proc/self/mountinfo."""
    mounts: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3 or after[0] != "cgroup":
            continue
        for option in after[2].split(","):
            if option in CONTROLLERS:
                mounts.setdefault(option, Path(fields[4]))
    return mounts


def own_groups(proc_cgroup: str) -> dict[str, str]:
    """Controller -> this process's group path in each v1 hierarchy, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1]:
            for controller in parts[1].split(","):
                groups[controller] = parts[2]
    return groups


class V1Cgroups:
    """The pool's groups in each writable v1 controller; `attach` puts a container in groups of its own."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = roots  # controller -> the pool's directory

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.roots)

    def attach(self, name: str, pid: int, limits: Limits) -> None:
        """Make the container's groups, set their limits, then move `pid` (with all its threads) in. OSError if
        the process is gone or a limit cannot be set."""
        for controller, root in self.roots.items():
            group = root / name
            group.mkdir(exist_ok=True)
            if controller == "memory":
                # Pages already charged to the proxy move with it, so the limit counts the whole container.
                with contextlib.suppress(OSError):
                    _write(group / "memory.move_charge_at_immigrate", "3")
                _write(group / "memory.limit_in_bytes", str(limits.memory_bytes))
                swap = group / "memory.memsw.limit_in_bytes"
                if swap.exists():  # only with swap accounting on
                    _write(swap, str(limits.memory_bytes))
            elif controller == "pids":
                _write(group / "pids.max", str(limits.pids))
            elif controller == "cpu":
                _write(group / "cpu.shares", str(limits.cpu_shares))
            _write(group / "cgroup.procs", str(pid))

    def freeze(self, name: str) -> None:
        _write(self.roots["freezer"] / name / "freezer.state", "FROZEN")

    def thaw(self, name: str) -> None:
        _write(self.roots["freezer"] / name / "freezer.state", "THAWED")

    def frozen(self, name: str) -> bool:
        return (self.roots["freezer"] / name / "freezer.state").read_text().strip() == "FROZEN"

    def remove(self, name: str, timeout_s: float = 2.0) -> bool:
        """Remove the container's groups once its processes are gone (a group with tasks cannot be removed:
        retried until `timeout_s`); whether all went."""
        if "freezer" in self.roots:
            with contextlib.suppress(OSError):
                self.thaw(name)  # a frozen task cannot even die
        deadline = time.monotonic() + timeout_s
        pending = [root / name for root in self.roots.values()]
        while pending:
            pending = [group for group in pending if not _rmdir(group)]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return not pending

    def close(self) -> None:
        """Remove the pool's groups (and any container group left empty)."""
        for root in self.roots.values():
            _remove_tree(root)


def open_v1(pool_name: str, mountinfo: str | None = None, proc_cgroup: str | None = None) -> V1Cgroups | None:
    """The pool's groups under this process's own group in every v1 controller it can write; None when it can
    write none of memory and pids (then cgroups add nothing worth their cost). Leftover pools' empty groups go."""
    try:
        mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
        proc_cgroup = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    mounts = v1_mounts(mountinfo)
    own = own_groups(proc_cgroup)
    roots: dict[str, Path] = {}
    for controller, mount in mounts.items():
        base = mount / own.get(controller, "/").lstrip("/")
        if not base.is_dir():  # a cgroup namespace hides the path: use the hierarchy's visible root
            base = mount
        pool = base / f"squall-{pool_name}"
        try:
            _remove_tree(pool)  # a previous life of this pool
            pool.mkdir(exist_ok=True)
        except OSError as exc:
            log.debug("cgroup v1 %s not writable: %s", controller, exc)
            continue
        roots[controller] = pool
    if not {"memory", "pids"} & set(roots):
        for pool in roots.values():
            _remove_tree(pool)
        return None
    return V1Cgroups(roots)


def remove_pools(cgroups: V1Cgroups, pool_names: list[str]) -> None:
    """Remove the groups of pools whose owner died: a group still holding tasks stays (rmdir refuses it), so
    nothing running is ever touched."""
    for root in cgroups.roots.values():
        for name in pool_names:
            other = root.parent / f"squall-{name}"
            if other != root:
                _remove_tree(other)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def _remove_tree(path: Path) -> None:
    """rmdir a group and its child groups, deepest first (cgroupfs refuses a recursive delete of files).

    Invokers starting together clear the same dead pools at once, so groups vanish during the walk: os.walk
    skips a directory it can no longer read, where Path.rglob raised FileNotFoundError (and the invoker died)."""
    for group, _, _ in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(group)
