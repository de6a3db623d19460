"""The in-container proxies inside real rootless containers: the image's interpreter, the proxy mounted read-only,
the socket in a bind-mounted directory, no network; /init, /run and /logs over the socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from podman import PodmanClient
from podman.errors import APIError

from broker.config import Settings
from runtimes.images import RECIPES, PodmanUser, image_tag, resolve_podman_user
from runtimes.podman_service import PodmanService
from runtimes.proxy import install_proxies
from tests.unit.test_proxy_python import LOG_LINE, RUN_KEYS, ProxyClient, make_zip, percentiles

pytestmark = [pytest.mark.e2e]

FIFO_SCRIPT = 'mkfifo -m 600 /tmp/.o /tmp/.e && exec "$@" 1<>/tmp/.o 2<>/tmp/.e'
COMMANDS = {
    "python": ["python3", "/squall/proxy/python_proxy.py"],
    "nodejs": ["node", "/squall/proxy/node_proxy.js"],
    # the single-process launch of the Node.js proxy: its fds 1 and 2 on FIFOs that it reads
    "nodejs-fifo": ["sh", "-c", FIFO_SCRIPT, "sh", "node", "/squall/proxy/node_proxy.js"],
}
EXTRA_ENV = {"nodejs-fifo": {"SQUALL_PROXY_LOG_FIFOS": "/tmp/.o:/tmp/.e"}}
ACTIONS = {
    "python": """
import os, subprocess
def main(args):
    if args.get('warm'):
        return args
    print('hello from', args['who'])
    subprocess.run(['sh', '-c', 'echo from a child >&2'], check=True)
    try:
        open('/etc/probe', 'w').close()
        writable = True
    except OSError:
        writable = False
    return {'who': args['who'], 'ns': os.environ['__OW_NAMESPACE'], 'uid': os.getuid(), 'cwd': os.getcwd(),
            'root_writable': writable, 'interfaces': sorted(os.listdir('/sys/class/net'))}
""",
    "nodejs": """
const fs = require('fs');
function main(args) {
  if (args.warm) return args;
  console.log('hello from', args.who);
  require('child_process').execSync('echo from a child >&2', { stdio: 'inherit' });
  let writable = true;
  try { fs.writeFileSync('/etc/probe', ''); } catch (e) { writable = false; }
  return { who: args.who, ns: process.env.__OW_NAMESPACE, uid: process.getuid(), cwd: process.cwd(),
           root_writable: writable, interfaces: fs.readdirSync('/sys/class/net').sort() };
}
""",
}


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def user(settings: Settings) -> PodmanUser:
    return resolve_podman_user(settings.podman_user)


@pytest.fixture
def dirs(user: PodmanUser) -> Iterator[tuple[Path, Path]]:
    """The installed proxies and an empty socket directory, both under the engine user's runtime dir."""
    base = Path(user.runtime_dir, f"squall-test-proxy-{uuid.uuid4().hex[:8]}")
    proxies = install_proxies(base / "proxies", user.uid, user.gid)
    sockets = base / "socket"
    sockets.mkdir(mode=0o777)
    os.chmod(sockets, 0o777)  # writable for a non-root user id inside the container too
    os.chown(sockets, user.uid, user.gid)
    yield proxies, sockets
    shutil.rmtree(base)


async def call(client: ProxyClient, target: str, body: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(client.post, target, body)


@dataclass
class Started:
    client: ProxyClient
    create_ms: float
    start_ms: float
    ready_ms: float  # from the end of start to the socket appearing


@asynccontextmanager
async def proxy_container(
    settings: Settings, dirs: tuple[Path, Path], launch: str, container_user: str = ""
) -> AsyncIterator[Started]:
    """A sandboxed container running the proxy, and a connection to it once its socket appears."""
    proxies, sockets = dirs
    socket_path = sockets / "proxy.sock"
    async with PodmanService(settings) as service:
        with PodmanClient(base_url=service.base_url) as podman:
            began = time.monotonic()
            container = await asyncio.to_thread(
                podman.containers.create,
                image_tag(RECIPES[launch.partition("-")[0]]),
                name=f"squall-test-proxy-{uuid.uuid4().hex[:8]}",
                command=COMMANDS[launch],
                user=container_user or None,
                environment={
                    "SQUALL_PROXY_SOCKET": "/run/squall/proxy.sock",
                    "SQUALL_LOG_LIMIT_BYTES": "4096",
                    **EXTRA_ENV.get(launch, {}),
                },
                working_dir="/tmp",
                network_mode="none",
                cap_drop=["ALL"],
                no_new_privileges=True,
                read_only=True,
                ulimits=[
                    {"Name": "nofile", "Soft": 1024, "Hard": 1024},
                    {"Name": "nproc", "Soft": 1024, "Hard": 1024},
                ],
                mounts=[
                    {"type": "bind", "source": str(proxies), "target": "/squall/proxy", "read_only": True},
                    {"type": "bind", "source": str(sockets), "target": "/run/squall"},
                    {"type": "tmpfs", "source": "tmpfs", "target": "/tmp", "size": "64m"},
                ],
            )
            client: ProxyClient | None = None
            try:
                created = time.monotonic()
                await asyncio.to_thread(container.start)
                running = time.monotonic()
                deadline = checked = running
                while not socket_path.exists():
                    await asyncio.sleep(0.001)
                    if time.monotonic() - checked > 0.2:  # now and then: is it still running?
                        await asyncio.to_thread(container.reload)
                        output = b"".join(cast(Iterable[bytes], container.logs())).decode(errors="replace")
                        assert container.status == "running", output
                        assert time.monotonic() < deadline + 20, f"no socket after 20 s: {output}"
                        checked = time.monotonic()
                ready = time.monotonic()
                client = ProxyClient(str(socket_path))
                yield Started(
                    client=client,
                    create_ms=1000 * (created - began),
                    start_ms=1000 * (running - created),
                    ready_ms=1000 * (ready - running),
                )
            finally:
                if client is not None:
                    client.close()
                await remove(settings, podman, container.id)


async def remove(settings: Settings, podman: PodmanClient, container_id: str) -> None:
    """Kill and remove a container, through a fresh service if the one in use went away meanwhile (another
    process may have stopped a service it had started and this test reused)."""
    try:
        # SIGKILL first: a forced remove would otherwise wait out the stop timeout.
        with contextlib.suppress(APIError):
            await asyncio.to_thread(podman.containers.get(container_id).kill, signal="SIGKILL")
        await asyncio.to_thread(podman.containers.remove, container_id, force=True)
    except (APIError, requests.ConnectionError):
        async with PodmanService(settings) as service:
            with PodmanClient(base_url=service.base_url) as again:
                await asyncio.to_thread(again.containers.remove, container_id, force=True)


@pytest.mark.parametrize("launch", ["python", "nodejs", "nodejs-fifo"])
@pytest.mark.parametrize("container_user", ["", "10000:10000"])
async def test_proxy_serves_an_action_in_an_isolated_container(
    settings: Settings, launch: str, container_user: str, dirs: tuple[Path, Path]
) -> None:
    family = launch.partition("-")[0]
    async with proxy_container(settings, dirs, launch, container_user) as started:
        client = started.client
        begin = time.monotonic()
        code = ACTIONS[family]
        init = await call(client, "/init", {"value": {"name": "smoke", "main": "main", "code": code}})
        assert init == (200, {"ok": True})
        initialized = time.monotonic()
        status, result = await call(client, "/run", {"value": {"who": family}, **RUN_KEYS})
        first_run = time.monotonic()
        assert status == 200, result
        assert result == {
            "who": family,
            "ns": "guest",
            "uid": 10000 if container_user else 0,
            "cwd": "/tmp/action" if family == "python" else "/tmp",  # as OpenWhisk's runtimes do
            "root_writable": False,
            "interfaces": ["lo"],
        }
        status, logs = await call(client, "/logs", {})
        assert status == 200
        assert logs["truncated"] is False
        texts = [f"{m[1]}: {m[2]}" for m in map(LOG_LINE.match, logs["logs"]) if m]
        assert sorted(texts) == sorted([f"stdout: hello from {family}", "stderr: from a child"])

        # Warm round trips, measured without the event loop in between (it blocks for a fraction of a second).
        samples = []
        for _ in range(1500):
            before = time.perf_counter()
            status, _ = client.request("/run", b'{"value":{"warm":true},"namespace":"guest"}')
            samples.append(1e6 * (time.perf_counter() - before))
            assert status == 200
        p50, p99 = percentiles(samples[500:])
        print(
            f"\n{launch} as {container_user or 'root'}: create {started.create_ms:.0f} ms, start "
            f"{started.start_ms:.0f} ms, socket {started.ready_ms:.0f} ms later, /init "
            f"{1000 * (initialized - begin):.1f} ms, first /run {1000 * (first_run - initialized):.1f} ms; "
            f"warm /run p50 {p50:.0f} µs p99 {p99:.0f} µs"
        )


ZIPS = {
    "python": make_zip(
        {
            "__main__.py": "import helper, fakepkg\ndef main(a):\n    return {'got': [helper.X, fakepkg.Y]}\n",
            "helper.py": "X = 'helper'\n",
            "virtualenv/lib/python3.11/site-packages/fakepkg/__init__.py": "Y = 'virtualenv'\n",
        },
        stored=("helper.py",),
    ),
    "nodejs-fifo": make_zip(
        {
            "package.json": '{"name": "zipped", "main": "lib/app.js"}',
            "lib/app.js": "exports.main = async () => ({ got: [require('./helper').x, require('dep').y] });\n",
            "lib/helper.js": "exports.x = 'helper';\n",
            "node_modules/dep/index.js": "exports.y = 'node_modules';\n",
        },
        stored=("lib/helper.js",),
    ),
}


@pytest.mark.parametrize("launch", ["python", "nodejs-fifo"])
async def test_zip_actions_with_their_dependencies(
    settings: Settings, launch: str, dirs: tuple[Path, Path]
) -> None:
    async with proxy_container(settings, dirs, launch) as started:
        value = {"name": "zipped", "main": "main", "code": ZIPS[launch], "binary": True}
        assert await call(started.client, "/init", {"value": value}) == (200, {"ok": True})
        expected = ["helper", "virtualenv" if launch == "python" else "node_modules"]
        assert await call(started.client, "/run", {"value": {}, **RUN_KEYS}) == (200, {"got": expected})
