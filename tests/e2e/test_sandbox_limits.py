"""What the host offers is enforced: a container's processes together stay under its memory and task limits while
another namespace's action runs, and an idle warm container is paused, then resumed warm (real rootless Podman)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from broker.config import Settings
from runtimes.pool import ContainerPool
from tests.e2e.test_pool import OK_PY, Engine, podman, pool_of, request, result, settings, wait_until

pytestmark = [pytest.mark.e2e]

__all__ = ["podman", "settings"]  # module fixtures shared with test_pool

GRACE_S = 0.3


@pytest.fixture(scope="module")
async def pool(settings: Settings, podman: Engine) -> AsyncIterator[ContainerPool]:
    async with pool_of(settings, podman, pause_grace_s=GRACE_S, memory_mb=1024) as pool:
        yield pool


# Children that each touch 80 MB: with RLIMIT_DATA alone each one fits its own process limit, so only a limit on
# the whole container stops them.
HOARDERS = """
import os, time
def main(args):
    pids = []
    for _ in range(args["children"]):
        pid = os.fork()
        if pid == 0:
            try:
                hoard = bytearray(b"\\x01") * (80 << 20)
                time.sleep(2)
                os._exit(0)
            except MemoryError:
                os._exit(3)
        pids.append(pid)
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    return {"codes": codes}
"""


async def test_processes_together_stay_under_the_containers_memory_limit(pool: ContainerPool) -> None:
    if not pool.backend.features.memory_limits:
        pytest.skip(
            f"no memory limit per container on this host: {pool.backend.features.describe(pool.backend.sandbox)}"
        )
    hoarding = asyncio.create_task(
        pool.run(
            request(HOARDERS, key="tenant-a/hoard@1", value={"children": 6}, memory_mb=128, timeout_ms=20_000)
        )
    )
    # Meanwhile another namespace's action runs, in a container of its own.
    other = await asyncio.wait_for(pool.run(request(OK_PY, key="tenant-b/ok@1", value={"n": 1})), 30)
    assert result(other) == {"ok": True, "got": {"n": 1}}
    outcome = await hoarding
    assert not outcome.timed_out
    if outcome.crashed or outcome.status != 200:
        print(f"\nthe hoarding run failed as a whole: crashed={outcome.crashed} status={outcome.status}")
        return  # the kernel chose the action's own process: the run failed cleanly, as a crash
    codes = result(outcome)["codes"]
    print(f"\nexit codes of 6 children touching 80 MB each in a 128 MB container: {codes}")
    survivors = codes.count(0)
    assert survivors * 80 < 128, f"{survivors} children held 80 MB each in a 128 MB container: {codes}"
    assert -9 in codes or 3 in codes, codes


async def test_a_containers_own_groups_carry_its_limits(pool: ContainerPool) -> None:
    backend = pool.backend
    cgroups = backend._cgroups
    if cgroups is None:
        pytest.skip(f"the invoker writes no cgroups here: {backend.features.describe(backend.sandbox)}")
    code = "def main(args):\n    return {'groups': open('/proc/self/cgroup').read()}\n"
    running = asyncio.create_task(pool.run(request(code, key="tenant-a/groups@1", memory_mb=256)))
    outcome = await running
    entry = next(
        e for e in pool._entries.values() if e.container is not None and e.key == "tenant-a/groups@1"
    )
    assert entry.container is not None
    name = entry.container.cgroup
    assert name and name in result(outcome)["groups"], "the action's process is in the container's group"
    root = cgroups.roots

    def read(controller: str, file: str) -> str:
        return (root[controller] / name / file).read_text().strip()

    assert int(await asyncio.to_thread(read, "memory", "memory.limit_in_bytes")) == 256 << 20
    assert int(await asyncio.to_thread(read, "pids", "pids.max")) == backend.sandbox.nproc
    if "cpu" in root:
        assert int(await asyncio.to_thread(read, "cpu", "cpu.shares")) == 1024 * 256 // 1024


# A background thread the action leaves running: it stamps the time every 10 ms. While the container is paused
# it cannot, so the largest gap between stamps shows how long the container was frozen.
TICKER = """
import threading, time
stamps = []
def tick():
    while True:
        stamps.append(time.monotonic())
        del stamps[:-2000]
        time.sleep(0.01)
threading.Thread(target=tick, daemon=True).start()
def main(args):
    recent = stamps[-2000:]
    gaps = [b - a for a, b in zip(recent, recent[1:])]
    return {"max_gap": max(gaps, default=0.0)}
"""


async def test_an_idle_warm_container_is_paused_and_resumes_warm(pool: ContainerPool) -> None:
    backend = pool.backend
    key = "tenant-a/ticker@1"
    first = await pool.run(request(TICKER, key=key))
    assert first.cold
    if not backend.can_pause:
        pytest.skip(f"this host cannot pause containers: {backend.features.describe(backend.sandbox)}")
    entry = next(e for e in pool._entries.values() if e.key == key)
    assert entry.container is not None
    container = entry.container
    await wait_until(lambda: entry.paused, 10, "the idle container to be paused")
    assert await backend.paused(container)
    assert pool.stats().paused >= 1
    held_s = 1.5
    await asyncio.sleep(held_s)  # the container stays frozen for this long: what the ticker must show
    started = time.monotonic()
    second = await pool.run(request(TICKER, key=key))
    resumed_ms = (time.monotonic() - started) * 1000
    assert not second.cold and second.container == first.container, "resumed, not a cold start"
    assert not entry.paused and not await backend.paused(container)
    assert result(second)["max_gap"] >= held_s, "the background thread ran while the container was paused"
    print(f"\nresume + warm run: {resumed_ms:.1f} ms")
    # Claimed before its grace period ends, a container is never paused.
    third = await pool.run(request(TICKER, key=key))
    fourth = await pool.run(request(TICKER, key=key))
    assert not third.cold and not fourth.cold and not entry.paused
