"""Action containers are sandboxed: no host network, read-only root, no privileges, bounded processes, logs, memory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from runtimes.activation_result import run_response
from runtimes.pool import ContainerPool
from tests.e2e.test_pool import NODE, Engine, podman, pool_of, request, result, settings, wait_until

pytestmark = [pytest.mark.e2e]

__all__ = ["podman", "settings"]  # module fixtures shared with test_pool

NPROC = 128  # small, so that the fork bomb hits it quickly


@pytest.fixture(scope="module")
async def pool(settings: Settings, podman: Engine) -> AsyncIterator[ContainerPool]:
    async with pool_of(settings, podman, nproc=NPROC, tmpfs_mb=16) as pool:
        yield pool


PROBE = """
import os, resource, socket
def main(args):
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    def attempt(path):
        try:
            with open(path, "w") as f:
                f.write("x")
            return "written"
        except OSError as e:
            return e.strerror
    def fill_tmp():
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * (1 << 20))
            return "filled"
        except OSError as e:
            return e.strerror
        finally:
            os.unlink("/tmp/fill")
    return {
        "uid": os.getuid(),
        "cap_eff": int(status["CapEff"].strip(), 16),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
        "data": resource.getrlimit(resource.RLIMIT_DATA),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "root": attempt("/etc/squall-probe"),
        "usr": attempt("/usr/lib/squall-probe"),
        "socket_dir": attempt("/run/squall/squall-probe"),
        "proxy_dir": attempt("/squall/proxy/squall-probe"),
        "tmp": attempt("/tmp/squall-probe"),
        "tmp_full": fill_tmp(),
        "autogroup": open("/proc/self/autogroup").read().split()[0],
    }
"""


async def test_the_sandbox_seen_from_inside(pool: ContainerPool) -> None:
    seen = result(await pool.run(request(PROBE, memory_mb=128)))
    assert seen["uid"] >= pool.backend.sandbox.uid_low, "not root, and a user id of its own"
    assert seen["cap_eff"] == 0
    assert seen["no_new_privs"] == "1"
    assert seen["nofile"] == [1024, 1024]
    assert seen["nproc"] == [NPROC, NPROC]
    assert seen["data"] == [128 * 1024 * 1024] * 2
    assert seen["interfaces"] == ["lo"]
    assert seen["root"] == seen["usr"] == "Read-only file system"
    assert seen["proxy_dir"] == "Read-only file system"
    assert seen["socket_dir"] == "Permission denied"
    assert seen["tmp"] == "written"
    assert seen["tmp_full"] == "No space left on device", "the tmpfs is small"
    # Its own scheduling group: however many processes it runs, the host's share of the CPU stays.
    # A process that never started a session (CI under a service manager) is in the root autogroup, whose
    # file is empty.
    ours = await asyncio.to_thread(Path("/proc/self/autogroup").read_text)
    assert seen["autogroup"].startswith("/autogroup-")
    assert seen["autogroup"] != (ours.split() or ["<root autogroup>"])[0]


async def test_no_access_to_the_hosts_loopback_services(pool: ContainerPool) -> None:
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = (
        "import socket\n"
        "def main(args):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', args['port']), timeout=2).close()\n"
        "        return {'connected': True}\n"
        "    except OSError as e:\n"
        "        return {'connected': False, 'why': str(e)}\n"
    )
    try:
        outcome = await pool.run(request(code, value={"port": port}))
    finally:
        server.close()
        await server.wait_closed()
    reply = result(outcome)
    assert reply["connected"] is False, reply
    assert connections == 0


async def test_a_fork_bomb_is_contained(pool: ContainerPool) -> None:
    bomb = (
        "import os\n"
        "def main(args):\n"
        "    while args.get('bomb'):\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
        "    return {'calm': True}\n"
    )
    spawner = (
        "import subprocess\n"
        "def main(args):\n"
        "    return {'out': subprocess.run(['echo', 'alive'], capture_output=True, text=True).stdout}\n"
    )
    key = "ns/bomb@1"
    running = asyncio.create_task(pool.run(request(bomb, key=key, value={"bomb": True}, timeout_ms=4000)))
    await asyncio.sleep(1.5)  # let it reach its limit
    # While it rages: another container still forks, and so does the host.
    during = await asyncio.wait_for(pool.run(request(spawner)), 30)
    assert result(during) == {"out": "alive\n"}
    host = await asyncio.to_thread(subprocess.run, ["true"], check=False)
    assert host.returncode == 0
    bombed = await running
    assert bombed.timed_out
    # The next run of the same action gets a new container and works.
    calm = await pool.run(request(bomb, key=key, timeout_ms=5000))
    assert result(calm) == {"calm": True}
    assert calm.cold and calm.container != bombed.container


def processes_of(host_uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nUid:\t{host_uid}\t" in status and "\nState:\tZ" not in status:
                count += 1
    return count


async def test_the_bomb_is_held_at_its_process_limit(pool: ContainerPool) -> None:
    bomb = "import os, time\ndef main(args):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            time.sleep(0.05)\n"
    running = asyncio.create_task(pool.run(request(bomb, timeout_ms=3000)))
    try:
        entry = await _busy_entry(pool)
        host_uid = _host_uid(entry.uid)
        peak = 0
        while not running.done():
            peak = max(peak, await asyncio.to_thread(processes_of, host_uid))
            await asyncio.sleep(0.1)
        assert NPROC // 2 <= peak <= NPROC, f"{peak} processes of the container's user"
    finally:
        outcome = await running
    assert outcome.timed_out
    # The container is destroyed behind the run's outcome: killing it ends every process of its user.
    await wait_until(
        lambda: asyncio.to_thread(lambda: processes_of(host_uid) == 0), 10, "the bomb's processes to end"
    )


async def _busy_entry(pool: ContainerPool) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        busy = [e for e in pool._entries.values() if e.busy and e.container is not None]
        if busy:
            return busy[0]
        await asyncio.sleep(0.02)
    pytest.fail("no container started")


def _host_uid(container_uid: int) -> int:
    """The host uid of a user id of the engine's user namespace: its /etc/subuid range starts at id 1."""
    user = os.environ.get("SQUALL_PODMAN_USER", "squall")
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _ = line.split(":")
        if name == user:
            return int(start) + container_uid - 1
    pytest.fail(f"no subuid range for {user}")


async def test_a_100_mb_log_flood_is_truncated(pool: ContainerPool) -> None:
    flood = (
        "import sys\n"
        "def main(args):\n"
        "    line = 'x' * 1023 + '\\n'\n"
        "    chunk = line * 1024\n"
        "    for _ in range(args.get('mb', 0)):\n"
        "        sys.stdout.write(chunk)\n"
        "    sys.stdout.flush()\n"
        "    print('after the flood')\n"
        "    return {'done': True}\n"
    )
    key = "ns/flood@1"
    limit = 1024 * 1024
    started = time.monotonic()
    flooded = await pool.run(
        request(flood, key=key, value={"mb": 100}, log_limit_bytes=limit, timeout_ms=60_000)
    )
    elapsed = time.monotonic() - started
    assert result(flooded) == {"done": True}
    assert flooded.logs_truncated
    size = sum(len(line) + 1 for line in flooded.logs)
    assert limit // 2 < size <= limit + 200, size
    assert "Logs were truncated" in flooded.logs[-1]
    print(f"\n100 MB of logs: {elapsed:.2f} s, {len(flooded.logs)} lines kept")
    # The container stays usable and the next run's logs are its own.
    calm = await pool.run(request(flood, key=key, log_limit_bytes=limit))
    assert not calm.cold and not calm.logs_truncated
    assert [line.split(" ", 1)[1].strip() for line in calm.logs] == ["stdout: after the flood"]


async def test_a_5_mb_result_is_refused_with_openwhisks_message(pool: ContainerPool) -> None:
    outcome = await pool.run(request("def main(args):\n    return {'big': 'x' * 5_000_000}\n"))
    assert outcome.status == 200 and len(outcome.body) > 5_000_000
    response = run_response(outcome)
    assert response.status == "application error"
    message = response.result["error"]
    assert message.startswith("The action produced a response that exceeded the allowed length: ")
    assert f"{len(outcome.body)} > 1048576 bytes" in message


async def test_memory_beyond_the_limit_is_refused_to_the_action(pool: ContainerPool) -> None:
    code = (
        "def main(args):\n"
        "    hoard = []\n"
        "    try:\n"
        "        for _ in range(400):\n"
        "            hoard.append(bytearray(1 << 20))\n"
        "    except MemoryError:\n"
        "        return {'stopped_at_mb': len(hoard)}\n"
        "    return {'stopped_at_mb': None}\n"
    )
    reply = result(await pool.run(request(code, memory_mb=128)))
    assert reply["stopped_at_mb"] is not None and reply["stopped_at_mb"] < 128


async def test_node_memory_beyond_the_limit_kills_only_its_container(pool: ContainerPool) -> None:
    code = "function main() { const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1)); }"
    outcome = await pool.run(request(code, kind=NODE, memory_mb=128, timeout_ms=20_000))
    assert outcome.crashed or (outcome.status is not None and outcome.status != 200), outcome
    assert not outcome.timed_out
    after = await pool.run(request("function main() { return {ok: true} }", kind=NODE, memory_mb=128))
    assert json.loads(after.body) == {"ok": True}
