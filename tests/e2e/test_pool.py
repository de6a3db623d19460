"""The container pool on real rootless Podman: warm reuse, stem cells, failures replaced, queueing, reaping, drain."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from podman import PodmanClient

from broker.config import Settings
from broker.errors import BadRequest, InternalError, Unavailable
from runtimes.contract import InitPayload, RunOutcome, RunPayload, RunRequest
from runtimes.podman_backend import POOL_LABEL, PodmanBackend
from runtimes.podman_service import PodmanService
from runtimes.pool import ContainerPool, PoolSettings

pytestmark = [pytest.mark.e2e]

PY = "python:3.11"
NODE = "nodejs:18"
OK_PY = "def main(args):\n    return {'ok': True, 'got': args}\n"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env()


class Engine:
    """The module's rootless API service, which the pools reuse, and clients of it to look at what they leave.
    A reused service may belong to another process (tests of several checkouts can share a host) and stop with
    it: a client then starts one of our own."""

    def __init__(self, service: PodmanService) -> None:
        self.service = service

    @asynccontextmanager
    async def client(self) -> AsyncIterator[PodmanClient]:
        if not await self.service.ping():
            await self.service.__aenter__()
        with PodmanClient(base_url=self.service.base_url) as client:
            yield client


@pytest.fixture(scope="module")
async def podman(settings: Settings) -> AsyncIterator[Engine]:
    async with PodmanService(settings) as service:
        yield Engine(service)


def request(
    code: str,
    *,
    key: str | None = None,
    kind: str = PY,
    value: Any = None,
    memory_mb: int = 256,
    timeout_ms: int = 10_000,
    log_limit_bytes: int = 10 * 1024 * 1024,
    network: bool = False,
) -> RunRequest:
    """A run of `code`; runs with the same `key` may share a warm container."""
    activation_id = uuid.uuid4().hex
    return RunRequest(
        pool_key=key or f"ns/{uuid.uuid4().hex[:8]}@1",
        kind=kind,
        memory_mb=memory_mb,
        timeout_ms=timeout_ms,
        log_limit_bytes=log_limit_bytes,
        network=network,
        init=InitPayload(name="a", code=code, env={"__OW_ACTIVATION_ID": activation_id}),
        run=RunPayload(
            value={} if value is None else value,
            namespace="ns",
            action_name="/ns/a",
            action_version="0.0.1",
            activation_id=activation_id,
            transaction_id="tx",
            deadline=str(int(time.time() * 1000) + timeout_ms),
        ),
    )


def result(outcome: RunOutcome) -> Any:
    assert outcome.status is not None, outcome
    return json.loads(outcome.body)


@asynccontextmanager
async def pool_of(settings: Settings, podman: Engine, **config: Any) -> AsyncIterator[ContainerPool]:
    """A pool with its own id (no stem cells unless asked); on exit, none of its containers may remain."""
    config.setdefault("prewarm", "")
    pool = ContainerPool(settings, f"t{uuid.uuid4().hex[:8]}", PoolSettings(**config))
    async with pool:
        yield pool
    assert await leftovers(podman, pool.backend.pool_id) == []


async def leftovers(podman: Engine, pool_id: str) -> list[str]:
    """Ids of the containers labelled with `pool_id` that the engine still has."""
    async with podman.client() as client:
        found = await asyncio.to_thread(
            client.containers.list, all=True, filters={"label": f"{POOL_LABEL}={pool_id}"}
        )
    return [c.id for c in found]


async def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_warm_reuse_cold_then_warm_in_the_same_container(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        key = "ns/warm@1"
        first = await pool.run(request(OK_PY, key=key, value={"n": 1}))
        second = await pool.run(request(OK_PY, key=key, value={"n": 2}))
        assert result(first) == {"ok": True, "got": {"n": 1}}
        assert result(second) == {"ok": True, "got": {"n": 2}}
        assert first.cold and first.init_ms is not None
        assert not second.cold and second.init_ms is None
        assert second.container == first.container
        assert first.start <= first.end <= second.start <= second.end
        assert pool.stats().warm == 1
        # Another revision of the same action is another container.
        other = await pool.run(request(OK_PY, key="ns/warm@2"))
        assert other.cold and other.container != first.container


async def test_node_runs_and_is_reused(settings: Settings, podman: Engine) -> None:
    code = "function main(params) { return Promise.resolve({hello: params.name || 'world'}) }"
    async with pool_of(settings, podman) as pool:
        first = await pool.run(request(code, kind=NODE, key="ns/node@1", value={"name": "squall"}))
        second = await pool.run(request(code, kind=NODE, key="ns/node@1"))
        assert result(first) == {"hello": "squall"}
        assert result(second) == {"hello": "world"}
        assert first.cold and not second.cold and second.container == first.container


async def test_logs_of_each_run_come_back_with_it(settings: Settings, podman: Engine) -> None:
    code = (
        "import sys\n"
        "def main(args):\n"
        "    print('out', args['n'])\n"
        "    print('err', args['n'], file=sys.stderr)\n"
        "    return {}\n"
    )
    async with pool_of(settings, podman) as pool:
        for n in (1, 2):
            outcome = await pool.run(request(code, key="ns/logs@1", value={"n": n}))
            assert result(outcome) == {}
            assert [line.split(" ", 1)[1].strip() for line in outcome.logs] == [
                f"stdout: out {n}",
                f"stderr: err {n}",
            ], outcome.logs
            assert not outcome.logs_truncated


async def test_a_stem_cell_is_used_then_replaced(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman, prewarm="python:1,nodejs:1") as pool:
        await wait_until(lambda: pool.stats().stem == 2, 20, "two stem cells")
        stems = {e.container.id for e in pool._entries.values() if e.container is not None}
        started = time.monotonic()
        outcome = await pool.run(request(OK_PY))
        elapsed = time.monotonic() - started
        assert outcome.cold and outcome.init_ms is not None
        assert outcome.container in stems, "the run took the prewarmed container"
        print(f"\nstem cell run: {1000 * elapsed:.1f} ms (init {outcome.init_ms} ms)")
        assert elapsed < 0.5  # a new container takes longer than the whole of this on the slowest run seen
        await wait_until(lambda: pool.stats().stem == 2, 20, "the stem cell to be replaced")
        # A stem cell serves only its memory size.
        other = await pool.run(request(OK_PY, memory_mb=128))
        assert other.container not in stems


async def test_a_crash_is_reported_and_the_container_replaced(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        key = "ns/crash@1"
        code = "import os\ndef main(args):\n    if args.get('die'):\n        os._exit(3)\n    return {'pid': os.getpid()}\n"
        healthy = await pool.run(request(code, key=key))
        crashed = await pool.run(request(code, key=key, value={"die": True}))
        assert crashed.crashed and crashed.status is None and not crashed.timed_out
        assert crashed.container == healthy.container
        assert pool.stats().containers == 0
        after = await pool.run(request(code, key=key))
        assert after.cold and after.container != healthy.container
        assert "pid" in result(after)


async def test_node_process_exit_is_a_crash(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        outcome = await pool.run(request("function main() { process.exit(1) }", kind=NODE))
        assert outcome.crashed and outcome.status is None


async def test_an_infinite_loop_times_out_and_the_next_run_works(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        key = "ns/loop@1"
        code = "def main(args):\n    while args.get('loop'):\n        pass\n    return {'done': True}\n"
        first = await pool.run(request(code, key=key, timeout_ms=5000))
        started = time.monotonic()
        looped = await pool.run(request(code, key=key, value={"loop": True}, timeout_ms=500))
        elapsed = time.monotonic() - started
        assert looped.timed_out and not looped.timed_out_in_init and looped.status is None
        assert 0.5 <= elapsed < 3
        assert looped.end - looped.start >= 500
        after = await pool.run(request(code, key=key, timeout_ms=5000))
        assert result(after) == {"done": True}
        assert after.cold and after.container not in (first.container, looped.container)


async def test_a_timeout_during_init_is_reported_as_such(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        code = "import time\ntime.sleep(30)\ndef main(args):\n    return {}\n"
        outcome = await pool.run(request(code, timeout_ms=500))
        assert outcome.timed_out and outcome.timed_out_in_init and outcome.cold


async def test_garbage_results_and_init_failures_destroy_the_container(
    settings: Settings, podman: Engine
) -> None:
    async with pool_of(settings, podman) as pool:
        not_a_dict = await pool.run(request("def main(args):\n    return 'a string'\n", key="ns/str@1"))
        assert not_a_dict.status != 200 or not not_a_dict.body.startswith(b"{")
        assert pool.stats().containers == 0
        broken = await pool.run(request("def main(args):\n    return {\n"))
        assert broken.init_status is not None and broken.init_status != 200
        assert broken.status is None and broken.cold
        assert any("SyntaxError" in line for line in broken.logs) or b"SyntaxError" in broken.init_body
        assert pool.stats().containers == 0
        # An application error keeps the container.
        app_error = await pool.run(request("def main(args):\n    return {'error': 'no'}\n", key="ns/err@1"))
        assert result(app_error) == {"error": "no"}
        assert pool.stats().warm == 1


async def test_concurrent_runs_of_one_action_get_one_container_each(
    settings: Settings, podman: Engine
) -> None:
    code = "import time\ndef main(args):\n    time.sleep(0.3)\n    return {}\n"
    async with pool_of(settings, podman) as pool:
        outcomes = await asyncio.gather(*(pool.run(request(code, key="ns/par@1")) for _ in range(3)))
        assert len({o.container for o in outcomes}) == 3
        assert all(o.wait_ms < 300 for o in outcomes)
        assert pool.stats().warm == 3


async def test_a_full_pool_queues_the_next_run_then_evicts_for_it(settings: Settings, podman: Engine) -> None:
    code = "import time\ndef main(args):\n    time.sleep(1.0)\n    return {'slept': True}\n"
    async with pool_of(settings, podman, memory_mb=256) as pool:
        first = asyncio.create_task(pool.run(request(code, key="ns/one@1")))
        await wait_until(lambda: pool.stats().busy == 1, 10, "the first run to take the only slot")
        second = asyncio.create_task(pool.run(request(code, key="ns/two@1")))
        await wait_until(lambda: pool.stats().queued == 1, 5, "the second run to queue")
        one, two = await asyncio.gather(first, second)
        assert result(one) == result(two) == {"slept": True}
        assert one.wait_ms < 500
        assert two.wait_ms >= 800, "the second run waited for the first to finish"
        assert two.container != one.container, "the idle container of the first action was evicted"
        assert pool.stats().containers == 1


async def test_a_run_bigger_than_the_pool_is_refused(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman, memory_mb=256) as pool:
        with pytest.raises(Unavailable, match="512 MB"):
            await pool.run(request(OK_PY, memory_mb=512))


async def test_idle_containers_are_reaped(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman, idle_timeout_s=1.0) as pool:
        started = time.monotonic()
        outcome = await pool.run(request(OK_PY))
        assert pool.stats().warm == 1
        await wait_until(lambda: pool.stats().containers == 0, 10, "the idle container to be reaped")
        assert time.monotonic() - started >= 1.0
        await wait_until(
            lambda: _gone(podman, pool.backend.pool_id, outcome.container), 10, "the engine to remove it"
        )


async def _gone(podman: Engine, pool_id: str, container: str) -> bool:
    return container not in await leftovers(podman, pool_id)


async def test_drain_finishes_in_flight_runs_and_removes_every_container(
    settings: Settings, podman: Engine
) -> None:
    code = "import time\ndef main(args):\n    time.sleep(0.5)\n    return {'finished': True}\n"
    pool_id = f"t{uuid.uuid4().hex[:8]}"
    pool = ContainerPool(settings, pool_id, PoolSettings(prewarm="python:1", drain_timeout_s=10))
    async with pool:
        await pool.run(request(OK_PY))
        await wait_until(lambda: pool.stats().stem == 1, 20, "a stem cell")
        assert len(await pool.backend.pool_containers()) == 2
        in_flight = asyncio.create_task(pool.run(request(code)))
        await wait_until(lambda: pool.stats().busy >= 1, 10, "the run to start")
    assert result(await in_flight) == {"finished": True}
    assert await leftovers(podman, pool_id) == []
    with pytest.raises(Unavailable, match="shutting down"):
        await pool.run(request(OK_PY))


async def test_leftovers_of_a_dead_pool_are_swept_at_start(settings: Settings, podman: Engine) -> None:
    dead_id = f"t{uuid.uuid4().hex[:8]}"
    dead = PodmanBackend(settings, dead_id)
    await dead.__aenter__()
    dead.owner = "999999999:1"  # a process that does not exist: as if this pool's process had crashed
    container = await dead.start("python", 128, 12345)
    # Leave `dead` without exiting it: its containers stay, as after a crash (only the client is closed).
    dead.pool_id = f"gone{uuid.uuid4().hex[:6]}"
    try:
        assert await leftovers(podman, dead_id) == [container.id]
        async with pool_of(settings, podman):  # another pool, another id: it sweeps containers of dead owners
            pass
        assert await leftovers(podman, dead_id) == []
        assert not await asyncio.to_thread(Path(container.socket_dir).exists)
    finally:
        await dead.__aexit__(None, None, None)


async def test_network_egress_is_refused_where_the_host_cannot_provide_it(
    settings: Settings, podman: Engine
) -> None:
    async with pool_of(settings, podman) as pool:
        if pool.backend.features.egress:
            pytest.skip("this host provides egress")
        with pytest.raises(BadRequest, match="Network egress was requested"):
            await pool.run(request(OK_PY, network=True))


async def test_outcome_round_trips_through_the_codec(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        outcome = await pool.run(request(OK_PY))
        assert msgspec.json.decode(msgspec.json.encode(outcome), type=RunOutcome) == outcome


async def test_a_container_whose_proxy_never_listens_fails_the_run_and_the_pool_survives(
    settings: Settings, podman: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pool_of(settings, podman, ready_timeout_s=5) as pool:
        spec = pool.backend.container_spec

        def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
            return {**spec(*args, **kwargs), "command": ["python3", "-c", "raise SystemExit(3)"]}

        monkeypatch.setattr(pool.backend, "container_spec", broken)
        started = time.monotonic()
        with pytest.raises(InternalError, match="exited before its proxy listened"):
            await pool.run(request(OK_PY))
        assert time.monotonic() - started < 3, "the exit was noticed before the ready timeout"
        assert pool.stats().containers == 0
        monkeypatch.setattr(pool.backend, "container_spec", spec)
        assert result(await pool.run(request(OK_PY)))["ok"] is True


async def test_a_warm_container_that_died_while_idle_is_replaced(settings: Settings, podman: Engine) -> None:
    async with pool_of(settings, podman) as pool:
        key = "ns/idle-death@1"
        first = await pool.run(request(OK_PY, key=key))
        async with podman.client() as client:
            container = await asyncio.to_thread(client.containers.get, first.container)
            await asyncio.to_thread(container.kill, signal="SIGKILL")

            def exited() -> bool:
                container.reload()
                return not container.attrs["State"]["Running"]

            await wait_until(lambda: asyncio.to_thread(exited), 10, "the container to exit")
        second = await pool.run(request(OK_PY, key=key))
        assert result(second)["ok"] is True
        assert second.cold and second.container != first.container


async def test_drain_past_its_deadline_cancels_the_rest_and_still_removes_everything(
    settings: Settings, podman: Engine
) -> None:
    code = "import time\ndef main(args):\n    time.sleep(30)\n    return {}\n"
    pool_id = f"t{uuid.uuid4().hex[:8]}"
    pool = ContainerPool(settings, pool_id, PoolSettings(prewarm="", memory_mb=256, drain_timeout_s=0.5))
    async with pool:
        long = asyncio.create_task(pool.run(request(code, timeout_ms=60_000)))
        await wait_until(lambda: pool.stats().busy == 1, 10, "the long run to start")
        queued = asyncio.create_task(pool.run(request(OK_PY)))
        await wait_until(lambda: pool.stats().queued == 1, 5, "the second run to queue")
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 5
    with pytest.raises(Unavailable, match="shutting down"):
        await queued
    with pytest.raises(asyncio.CancelledError):
        await long
    assert await leftovers(podman, pool_id) == []


async def test_the_pool_survives_a_restart_of_the_api_service(settings: Settings, podman: Engine) -> None:
    if not podman.service.started_here:
        pytest.skip("the API service belongs to another process: this test may not stop it")
    async with pool_of(settings, podman) as pool:
        key = "ns/survivor@1"
        first = await pool.run(request(OK_PY, key=key))
        await podman.service.stop()
        assert not await podman.service.ping()
        warm = await pool.run(request(OK_PY, key=key))  # a warm container needs no engine
        assert not warm.cold and warm.container == first.container
        cold = await pool.run(request(OK_PY))  # a new one does: the service is started again
        assert cold.cold and result(cold)["ok"] is True
