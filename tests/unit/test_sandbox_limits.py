"""The sandbox's decisions per kind of host: which limits the engine sets, which the invoker sets, which rlimits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.errors import InternalError
from runtimes.cgroups import V1Cgroups, cpu_shares, own_groups, remove_pools, v1_mounts
from runtimes.images import PodmanUser
from runtimes.podman_backend import (
    MB,
    OWNER_LABEL,
    POOL_LABEL,
    HostFeatures,
    PodmanBackend,
    Sandbox,
    cgroup_limits,
    detect_features,
    engine_limits,
    rlimits,
    with_v1_cgroups,
)

USER = PodmanUser(name="nobody", uid=65534, gid=65534, home="/nonexistent")
BOX = Sandbox(nproc=512, nproc_rlimit_only=64, cpu_total_mb=2048)


def info(version: str, controllers: list[str]) -> dict[str, object]:
    return {"host": {"cgroupVersion": version, "cgroupControllers": controllers}}


def test_cpu_shares_follow_openwhisk_memory_proportion() -> None:
    assert cpu_shares(256, 2048) == 128
    assert cpu_shares(2048, 2048) == 1024
    assert cpu_shares(1, 2048) == 2, "never below the kernel's minimum"
    assert cpu_shares(4096, 2048) == 1024
    assert cpu_shares(256, 0) == 1024


def test_cgroup_v2_with_delegated_controllers_lets_the_engine_limit_and_pause() -> None:
    features = detect_features(info("v2", ["cpu", "memory", "pids"]), USER)
    assert features.limits_by == "podman" and features.pause == "podman"
    limits = engine_limits(features, BOX, 256)
    assert limits == {
        "memory": {"limit": 256 * MB, "swap": 256 * MB},
        "pids": {"limit": 512},
        "cpu": {"shares": 128},
    }
    assert rlimits(features, BOX, 256) == (512, 256 * MB)


def test_cgroup_v2_without_delegation_falls_back_to_rlimits() -> None:
    features = detect_features(info("v2", []), USER)
    assert features.limits_by == "rlimits" and features.pause == ""
    assert engine_limits(features, BOX, 256) == {}
    assert rlimits(features, BOX, 256) == (64, 256 * MB)


def test_cgroup_v1_rootless_engine_sets_nothing_and_rlimits_bound_memory_by_processes() -> None:
    features = detect_features(info("v1", ["cpu", "memory", "pids"]), USER)
    assert not features.memory_limits and not features.pids_limits and features.pause == ""
    assert engine_limits(features, BOX, 256) == {}
    nproc, data = rlimits(features, BOX, 256)
    assert (nproc, data) == (64, 256 * MB)
    assert nproc * data <= 64 * 256 * MB
    assert "rlimits only" in features.describe(BOX) and "not paused" in features.describe(BOX)


def test_cgroup_v1_written_by_the_invoker() -> None:
    features = with_v1_cgroups(
        detect_features(info("v1", []), USER), frozenset({"memory", "pids", "cpu", "freezer"})
    )
    assert features.limits_by == "invoker" and features.pause == "freezer"
    assert engine_limits(features, BOX, 256) == {}, "the rootless engine must not be asked"
    assert rlimits(features, BOX, 256) == (512, 256 * MB)
    limits = cgroup_limits(BOX, 256)
    assert (limits.memory_bytes, limits.pids, limits.cpu_shares) == (256 * MB, 512, 128)
    assert "memory+swap, pids, cpu shares" in features.describe(BOX)
    no_freezer = with_v1_cgroups(detect_features(info("v1", []), USER), frozenset({"memory", "pids"}))
    assert no_freezer.pause == "" and not no_freezer.cpu_limits


def test_v1_mounts_and_own_groups_are_parsed_from_proc() -> None:
    mountinfo = (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime shared:5 - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:6 - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "38 31 0:35 / /sys/fs/cgroup/freezer rw,relatime shared:12 - cgroup cgroup rw,freezer\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw\n"
    )
    assert v1_mounts(mountinfo) == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }
    groups = own_groups("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n1:name=systemd:/x\n")
    assert groups["memory"] == "/process_api/abc" and groups["cpu"] == "/" and groups["cpuacct"] == "/"


def test_describe_names_the_cgroup_version() -> None:
    features = HostFeatures(cgroup_version="v2", memory_limits=True, pids_limits=True, egress=False)
    assert features.describe(BOX).startswith("cgroup v2;")


def test_a_dead_pool_cleared_by_two_invokers_at_once_is_removed_without_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invokers starting together clear the same dead pool: groups vanish under one while it walks."""
    own = tmp_path / "memory" / "squall-mine"
    own.mkdir(parents=True)
    dead = tmp_path / "memory" / "squall-dead"
    for group in ("a/x", "b/y", "c/z"):
        (dead / group).mkdir(parents=True)
    real_scandir = os.scandir

    def scandir_racing_the_other_invoker(path: Any) -> Any:
        if not isinstance(path, int) and Path(path).parent == dead:
            monkeypatch.undo()
            for group in dead.iterdir():  # the other invoker removes the groups this one has listed
                if group != Path(path):
                    shutil.rmtree(group)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_racing_the_other_invoker)
    remove_pools(V1Cgroups({"memory": own}), ["dead", "mine"])
    assert not dead.exists()
    assert own.is_dir(), "its own pool is not a dead one"


async def test_a_sweep_that_cannot_remove_one_container_removes_the_others_and_does_not_fail() -> None:
    """Two invokers sweeping one dead pool at once: the engine fails one of the two removals of a container,
    which must not fail the invoker's start or exit."""
    backend = PodmanBackend(Settings(), "sweeper")
    dead_owner = "999999999:1"
    listed = [
        {"Id": "a" * 64, "Labels": {POOL_LABEL: "sweeper"}},
        {"Id": "b" * 64, "Labels": {POOL_LABEL: "gone", OWNER_LABEL: dead_owner}},
        {"Id": "c" * 64, "Labels": {POOL_LABEL: "alive", OWNER_LABEL: backend.owner}},
    ]
    deleted: list[str] = []

    async def api(method: str, path: str, **_: Any) -> Any:
        if method == "get":
            return listed
        if method == "delete":
            ref = path.rsplit("/", 1)[1]
            if ref.startswith("a"):
                raise InternalError("Podman: removing container from runtime: `runc delete --force` failed")
            deleted.append(ref[:1])
        return None

    backend._api = api  # type: ignore[method-assign]
    try:
        assert await backend.sweep() == 2
    finally:
        backend._executor.shutdown()
    assert deleted == ["b"]  # the other doomed one; the live owner's container is left alone
