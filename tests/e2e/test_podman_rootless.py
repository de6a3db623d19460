"""Rootless Podman end to end: the service, the built runtime images, an isolated container, nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from podman import PodmanClient
from podman.errors import APIError

from broker.config import Settings
from broker.errors import Unavailable
from runtimes.images import RECIPES, PodmanUser, image_tag, latest_tag, recipe_digest, resolve_podman_user
from runtimes.podman_service import PodmanService

pytestmark = [pytest.mark.e2e]

ENGINE_COMMANDS = {"podman", "conmon", "catatonit", "runc", "slirp4netns"}

# Runs in the container: reports what the sandbox looks like from inside, then waits to be inspected.
PROBE = """
import json, os, resource, sys, time
def writable(path):
    try:
        open(path, "w").close()
        return True
    except OSError:
        return False
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "uid": os.getuid(),
    "mounted": open("/squall/hello.txt").read(),
    "mount_writable": writable("/squall/other.txt"),
    "root_writable": writable("/etc/squall-probe"),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "cap_eff": status["CapEff"].strip(),
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
    "python": sys.version_info[:2],
}), flush=True)
time.sleep(120)
"""


def engine_processes(uid: int) -> set[int]:
    """Live (non-zombie) engine processes of `uid`, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        if (
            status["Name"].strip() in ENGINE_COMMANDS
            and int(status["Uid"].split()[0]) == uid
            and not status["State"].strip().startswith("Z")
        ):
            found.add(int(entry.name))
    return found


def host_uid(pid: int) -> int:
    """The real uid of a process as the host sees it."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


async def wait_for(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def user(settings: Settings) -> PodmanUser:
    return resolve_podman_user(settings.podman_user)


@asynccontextmanager
async def engine(settings: Settings, user: PodmanUser) -> AsyncIterator[tuple[PodmanService, PodmanClient]]:
    """The service and a client; afterwards, every engine process it started must be gone."""
    before = engine_processes(user.uid)
    async with PodmanService(settings) as service:
        assert await service.ping()
        with PodmanClient(base_url=service.base_url) as client:
            yield service, client
    await wait_for(lambda: not (engine_processes(user.uid) - before), 10, "engine processes to exit")


async def test_service_uses_overlay_runc_and_the_built_images(settings: Settings, user: PodmanUser) -> None:
    async with engine(settings, user) as (service, client):
        assert service.socket_path.startswith(user.runtime_dir) or settings.podman_socket
        info = await asyncio.to_thread(client.info)
        assert info["host"]["security"]["rootless"] is True
        assert info["store"]["graphDriverName"] == "overlay"
        assert info["host"]["ociRuntime"]["name"] == "runc"
        for recipe in RECIPES.values():
            tag = image_tag(recipe)
            assert await asyncio.to_thread(client.images.exists, tag), f"{tag} missing: run `make images`"
            image = await asyncio.to_thread(client.images.get, tag)
            assert image.labels["io.squall.recipe"] == recipe_digest(recipe)
            latest = await asyncio.to_thread(client.images.get, latest_tag(recipe.kind_family))
            assert latest.id == image.id


@pytest.fixture
def mount_dir(user: PodmanUser) -> Any:
    """A user-owned directory under the user's runtime dir: the only kind a rootless container can mount."""
    path = Path(user.runtime_dir, f"squall-test-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o700)
    (path / "hello.txt").write_text("hello from the host")
    for item in (path, path / "hello.txt"):
        os.chown(item, user.uid, user.gid)
    yield path
    shutil.rmtree(path)


async def test_isolated_python_container(settings: Settings, user: PodmanUser, mount_dir: Path) -> None:
    async with engine(settings, user) as (_, client):
        started = time.monotonic()
        container = await asyncio.to_thread(
            client.containers.create,
            image_tag(RECIPES["python"]),
            command=["python3", "-c", PROBE],
            network_mode="none",
            cap_drop=["ALL"],
            read_only=True,
            # Not security_opt=["no-new-privileges"]: podman-py passes security_opt on as SELinux options,
            # and the engine then silently leaves no_new_privs off.
            no_new_privileges=True,
            ulimits=[
                {"Name": "nofile", "Soft": 1024, "Hard": 1024},
                {"Name": "nproc", "Soft": 1024, "Hard": 1024},
            ],
            mounts=[{"type": "bind", "source": str(mount_dir), "target": "/squall", "read_only": True}],
        )
        try:
            created = time.monotonic()
            await asyncio.to_thread(container.start)
            running = time.monotonic()

            def report() -> dict[str, Any] | None:
                lines = b"".join(cast(Iterable[bytes], container.logs())).decode().splitlines()
                return json.loads(lines[0]) if lines and lines[0].startswith("{") else None

            seen = await wait_for(report, 20, "the probe's report")
            print(
                f"\ncreate {1000 * (created - started):.0f} ms, start {1000 * (running - created):.0f} ms, "
                f"first output {1000 * (time.monotonic() - started):.0f} ms after create"
            )
            assert seen["uid"] == 0  # root inside the container ...
            await asyncio.to_thread(container.reload)
            assert (
                host_uid(container.attrs["State"]["Pid"]) == user.uid != 0
            )  # ... is the unprivileged user on the host
            assert seen["mounted"] == "hello from the host"
            assert seen["mount_writable"] is False
            assert seen["root_writable"] is False
            assert seen["interfaces"] == ["lo"]
            assert seen["no_new_privs"] == "1"
            assert int(seen["cap_eff"], 16) == 0
            assert seen["nofile"] == [1024, 1024]
            assert seen["nproc"] == [1024, 1024]
            assert seen["python"] == [3, 11]
        finally:
            # SIGKILL first: the probe is PID 1 and ignores SIGTERM, so a forced remove would wait out the
            # 10 s stop timeout.
            with contextlib.suppress(APIError):
                await asyncio.to_thread(container.kill, signal="SIGKILL")
            removing = time.monotonic()
            await asyncio.to_thread(container.remove, force=True)
            print(f"kill + remove {1000 * (time.monotonic() - removing):.0f} ms")
        assert not await asyncio.to_thread(client.containers.exists, container.id)


async def test_a_running_service_is_reused_and_left_running(settings: Settings, user: PodmanUser) -> None:
    async with engine(settings, user) as (outer, _):
        async with PodmanService(settings) as inner:
            assert inner.started_here is False
            assert inner.socket_path == outer.socket_path
        assert await outer.ping(), "leaving a reused service must not stop it"


async def test_missing_user_is_unavailable_with_the_fix(settings: Settings) -> None:
    missing = msgspec.structs.replace(settings, podman_user="squall-no-such-user")
    with pytest.raises(Unavailable, match=r"setup-host\.sh"):
        async with PodmanService(missing):
            pass
