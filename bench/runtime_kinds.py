"""Per runtime kind (named runtime_kinds, not runtimes: a bench script's directory is first on sys.path, where
`bench/runtimes.py` would hide the runtimes package from every bench script): cold start without a stem cell,
with one (both including the compile step of compiled kinds),
a cold start whose compile is served from the artefact cache, warm run p50/p99, and the image's size.

Run: .venv/bin/python bench/runtime_kinds.py [--kinds go:1.19,java:17] [--warm 200] [--cold 3]

Needs the rootless Podman set-up and the runtime images (`squall images ensure`). The action of every kind is the
hello-world of tests/e2e/runtime_samples.py (Python and Node.js: the same in their language). Medians of `--cold`
cold starts, each of a new action (a new owner namespace, so nothing is cached) unless said otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid

import msgspec

from bench.pool import noop_request
from broker.config import Settings
from broker.kinds import image_family
from runtimes.contract import InitPayload, RunRequest
from runtimes.images import RECIPES, as_user_kwargs, image_tag, podman_binary, resolve_podman_user
from runtimes.pool import ContainerPool, PoolSettings
from tests.e2e.runtime_samples import PROGRAMS

HELLO = {
    "python:3.11": ("def main(args):\n    return {'greeting': 'Hello ' + args.get('name', '')}\n", "main"),
    "nodejs:18": ("function main(args) { return {greeting: 'Hello ' + (args.name || '')} }", "main"),
    **PROGRAMS,
}


def request(kind: str, key: str) -> RunRequest:
    code, main = HELLO[kind]
    base = noop_request("python:3.11", key)  # its /run body; the init and the kind are this kind's
    init = InitPayload(name="hello", main=main, code=code)
    return msgspec.structs.replace(base, kind=kind, init=init, timeout_ms=300_000)


def image_size_mb(settings: Settings, kind: str) -> float:
    user = resolve_podman_user(settings.podman_user)
    tag = image_tag(RECIPES[image_family(kind)])
    done = subprocess.run(
        [podman_binary(), "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True, check=False, **as_user_kwargs(user),
    )  # fmt: skip
    return int(done.stdout.strip() or 0) / 1e6


async def cold(pool: ContainerPool, kind: str, key: str) -> tuple[float, int]:
    started = time.perf_counter()
    outcome = await pool.run(request(kind, key))
    assert outcome.status == 200 and outcome.cold, outcome
    return (time.perf_counter() - started) * 1000, outcome.init_ms or 0


async def wait_for_stem(pool: ContainerPool, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while pool.stats().stem < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("no stem cell")
        await asyncio.sleep(0.05)


async def measure(settings: Settings, kind: str, warm_n: int, cold_n: int) -> dict[str, float]:
    family = image_family(kind)
    figures: dict[str, float] = {}
    async with ContainerPool(
        settings, f"b{uuid.uuid4().hex[:8]}", PoolSettings(prewarm="", tmpfs_mb=256)
    ) as pool:
        no_stem, inits = [], []
        for _ in range(cold_n):
            ms, init_ms = await cold(pool, kind, f"b{uuid.uuid4().hex[:6]}/hello@1")
            no_stem.append(ms)
            inits.append(init_ms)
        figures["cold_no_stem"] = statistics.median(no_stem)
        figures["init"] = statistics.median(inits)
        owner = f"b{uuid.uuid4().hex[:6]}"
        await cold(pool, kind, f"{owner}/hello@1")
        cached = [(await cold(pool, kind, f"{owner}/hello@{n + 2}"))[0] for n in range(cold_n)]
        figures["cold_cached"] = statistics.median(cached)
        key = f"{owner}/hello@1"
        await pool.run(request(kind, key))
        samples = []
        for _ in range(warm_n):
            started = time.perf_counter()
            await pool.run(request(kind, key))
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        figures["warm_p50"] = samples[len(samples) // 2]
        figures["warm_p99"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    stem = PoolSettings(prewarm=f"{family}:1", tmpfs_mb=256)
    async with ContainerPool(settings, f"b{uuid.uuid4().hex[:8]}", stem) as pool:
        with_stem = []
        for _ in range(cold_n):
            await wait_for_stem(pool)
            with_stem.append((await cold(pool, kind, f"b{uuid.uuid4().hex[:6]}/hello@1"))[0])
        figures["cold_stem"] = statistics.median(with_stem)
    figures["image_mb"] = image_size_mb(settings, kind)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default=",".join(HELLO))
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--cold", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env(artefact_cache_dir=tempfile.mkdtemp(prefix="squall-bench-artefacts-"))
    print(
        "| kind | cold, no stem cell | cold, stem cell | of which /init | cold, compile cached | warm p50 | warm p99 | image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        f = await measure(settings, kind, args.warm, args.cold)
        print(
            f"| `{kind}` | {f['cold_no_stem']:.0f} ms | {f['cold_stem']:.0f} ms | {f['init']:.0f} ms "
            f"| {f['cold_cached']:.0f} ms | {f['warm_p50']:.2f} ms | {f['warm_p99']:.2f} ms | {f['image_mb']:.0f} MB |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
