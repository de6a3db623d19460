"""The hostile-action suite for compiled loop languages (Go, Java): fork bomb, memory hog, log flood, huge result."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.config import Settings
from runtimes.activation_result import run_response
from runtimes.pool import ContainerPool
from tests.e2e.runtime_samples import HOSTILE
from tests.e2e.test_pool import Engine, podman, pool_of, settings
from tests.e2e.test_runtimes import loop_request, need, result

pytestmark = [pytest.mark.e2e]

__all__ = ["podman", "settings"]

NPROC = 128
KINDS = list(HOSTILE)


@pytest.fixture(scope="module")
async def pool(
    settings: Settings, podman: Engine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ContainerPool]:
    local = Settings.from_env(artefact_cache_dir=str(tmp_path_factory.mktemp("artefacts")))
    async with pool_of(local, podman, nproc=NPROC, tmpfs_mb=128, memory_mb=4096) as pool:
        yield pool


async def run(pool: ContainerPool, kind: str, key: str, **options: Any) -> Any:
    need(pool, kind)
    code, main = HOSTILE[kind]
    return await pool.run(loop_request(kind, code, main=main, key=key, **options))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_fork_bomb_is_contained(pool: ContainerPool, kind: str) -> None:
    key = f"ns/bomb-{uuid.uuid4().hex[:6]}@1"
    assert result(await run(pool, kind, key)) == {"calm": True}  # compiled and warm
    bombing = asyncio.create_task(run(pool, kind, key, value={"mode": "bomb"}, timeout_ms=4000))
    await asyncio.sleep(1.5)
    # While it rages: another container of the same kind starts and runs, and the host still forks.
    other = await asyncio.wait_for(run(pool, kind, f"ns/calm-{uuid.uuid4().hex[:6]}@1"), 120)
    assert result(other) == {"calm": True}
    assert (await asyncio.to_thread(subprocess.run, ["true"], check=False)).returncode == 0
    bombed = await bombing
    assert bombed.timed_out, (bombed.body, bombed.logs[:4])
    calm = await run(pool, kind, key)
    assert result(calm) == {"calm": True} and calm.cold


@pytest.mark.parametrize("kind", KINDS)
async def test_a_memory_hog_is_stopped_at_its_limit(pool: ContainerPool, kind: str) -> None:
    key = f"ns/hog-{uuid.uuid4().hex[:6]}@1"
    hog = await run(pool, kind, key, value={"mode": "hog"}, memory_mb=256)
    if kind == "java:17":  # the heap is sized under the limit: an OutOfMemoryError the action can catch
        stopped = result(hog)["stopped_at_mb"]
        assert 64 <= stopped < 256, stopped
    else:  # the Go runtime cannot get memory past the data rlimit and ends the process
        assert hog.status == 400 and b"command exited" in hog.body, hog
        assert any("out of memory" in line for line in hog.logs), hog.logs[-5:]
    after = await run(pool, kind, key, memory_mb=256)
    assert result(after) == {"calm": True}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_100_mb_log_flood_is_truncated(pool: ContainerPool, kind: str) -> None:
    key = f"ns/flood-{uuid.uuid4().hex[:6]}@1"
    limit = 1024 * 1024
    flooded = await run(pool, kind, key, value={"mode": "flood", "mb": 100}, log_limit_bytes=limit)
    assert result(flooded) == {"done": True}
    assert flooded.logs_truncated
    assert sum(len(line) + 1 for line in flooded.logs) <= limit + 200
    assert "Logs were truncated" in flooded.logs[-1]
    calm = await run(pool, kind, key, value={"mode": "flood", "mb": 0}, log_limit_bytes=limit)
    assert not calm.cold and not calm.logs_truncated
    assert [line.split(" ", 1)[1] for line in calm.logs] == ["stdout: after the flood"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_5_mb_result_is_refused_with_openwhisks_message(pool: ContainerPool, kind: str) -> None:
    outcome = await run(pool, kind, f"ns/big-{uuid.uuid4().hex[:6]}@1", value={"mode": "big"})
    assert outcome.status == 200 and len(outcome.body) > 5_000_000
    response = run_response(outcome)
    assert response.status == "application error"
    assert response.result["error"].startswith(
        "The action produced a response that exceeded the allowed length"
    )
