"""Every loop language on real rootless Podman: parameters, errors, panics, logs, timeouts, zips, `__OW_*`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.config import Settings
from runtimes.activation_result import run_response
from runtimes.artefact_cache import artefact_key, owner_of
from runtimes.contract import InitPayload, RunOutcome, RunPayload, RunRequest
from runtimes.pool import ContainerPool
from tests.e2e.runtime_samples import PROGRAMS, ZIPS, zip_code
from tests.e2e.test_pool import Engine, podman, pool_of, settings

pytestmark = [pytest.mark.e2e]

__all__ = ["podman", "settings"]

KINDS = list(PROGRAMS)
# Generous for the first run of a compiled kind on a busy 2-core machine: it compiles in /init (Rust builds
# serde_json and its dependencies from Debian's sources).
COMPILE_MS = 240_000


@pytest.fixture(scope="module")
async def pool(
    settings: Settings, podman: Engine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ContainerPool]:
    cache = tmp_path_factory.mktemp("artefacts")
    local = Settings.from_env(artefact_cache_dir=str(cache))
    async with pool_of(local, podman, tmpfs_mb=256, memory_mb=4096) as pool:
        yield pool


def need(pool: ContainerPool, kind: str) -> None:
    """Skip where this host has no image of the kind's family (`squall images ensure` builds it)."""
    family = kind.partition(":")[0]
    if family not in pool.families:
        pytest.skip(f"no {family} runtime image here: run `squall images ensure`")


def loop_request(
    kind: str,
    code: str,
    *,
    main: str = "main",
    binary: bool = False,
    key: str,
    value: Any = None,
    timeout_ms: int = COMPILE_MS,
    memory_mb: int = 512,
    log_limit_bytes: int = 10 * 1024 * 1024,
) -> RunRequest:
    activation_id = uuid.uuid4().hex
    return RunRequest(
        pool_key=key,
        kind=kind,
        memory_mb=memory_mb,
        timeout_ms=timeout_ms,
        log_limit_bytes=log_limit_bytes,
        init=InitPayload(name="a", main=main, code=code, binary=binary, env={}),
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
    assert outcome.status == 200, outcome
    return json.loads(outcome.body)


@pytest.mark.parametrize("kind", KINDS)
async def test_one_action_does_everything_in_one_warm_container(pool: ContainerPool, kind: str) -> None:
    need(pool, kind)
    code, main = PROGRAMS[kind]
    key = f"ns/{kind.partition(':')[0]}-{uuid.uuid4().hex[:6]}@1"

    async def run(mode: str, **more: Any) -> RunOutcome:
        return await pool.run(loop_request(kind, code, main=main, key=key, value={"mode": mode, **more}))

    hello = await run("hello", name="Ann")
    assert result(hello) == {"greeting": "Hello Ann"}
    assert hello.cold and hello.init_ms is not None

    error = await run("error")
    assert result(error) == {"error": "bad input"}
    assert run_response(error).status == "application error"
    assert not error.cold and error.container == hello.container

    env = await run("env")
    assert result(env)["ns"] == "ns" and result(env)["id"], "this run's __OW_* (exact id: the next test)"

    logged = await run("log")
    assert logged.status == 200
    assert any(line.endswith("stdout: hello from the action") for line in logged.logs), logged.logs

    raised = await run("raise")
    if kind == "native":  # dockerskeleton: no JSON on stdout is a developer error, stderr in the logs
        assert raised.status == 502
        assert any(line.endswith("stderr: boom") for line in raised.logs), raised.logs
    else:
        assert "boom" in result(raised)["error"]
        assert run_response(raised).status == "application error"
        assert any("boom" in line for line in raised.logs), raised.logs
    again = await run("hello", name="Bob")
    assert result(again) == {"greeting": "Hello Bob"}
    if kind != "native":  # a developer error (native's) costs the container, as in OpenWhisk
        assert again.container == hello.container, "the container survives an exception or a panic"


@pytest.mark.parametrize("kind", KINDS)
async def test_env_carries_this_activations_id(pool: ContainerPool, kind: str) -> None:
    need(pool, kind)
    code, main = PROGRAMS[kind]
    request = loop_request(
        kind, code, main=main, key=f"ns/env-{uuid.uuid4().hex[:6]}@1", value={"mode": "env"}
    )
    assert result(await pool.run(request)) == {"id": request.run.activation_id, "ns": "ns"}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_multi_file_action(pool: ContainerPool, kind: str) -> None:
    need(pool, kind)
    files, main = ZIPS[kind]
    outcome = await pool.run(
        loop_request(kind, zip_code(files), main=main, binary=True, key=f"ns/zip-{uuid.uuid4().hex[:6]}@1")
    )
    assert result(outcome) == {"helper": "from a second file"}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_timeout_destroys_the_container(pool: ContainerPool, kind: str) -> None:
    need(pool, kind)
    code, main = PROGRAMS[kind]
    key = f"ns/slow-{uuid.uuid4().hex[:6]}@1"
    # Warm first (compiling takes its time), then a run that never ends within its 3 s.
    assert result(await pool.run(loop_request(kind, code, main=main, key=key, value={"name": "x"})))
    outcome = await pool.run(
        loop_request(kind, code, main=main, key=key, value={"mode": "sleep"}, timeout_ms=3000)
    )
    assert outcome.timed_out and not outcome.timed_out_in_init
    assert 3000 <= outcome.end - outcome.start < 8000
    after = await pool.run(loop_request(kind, code, main=main, key=key, value={"name": "y"}))
    assert result(after) == {"greeting": "Hello y"}
    assert after.cold, "a new container"


@pytest.mark.parametrize("kind", ["go:1.19", "java:17", "rust:1.63"])
async def test_a_second_container_reuses_the_compiled_artefact(pool: ContainerPool, kind: str) -> None:
    need(pool, kind)
    code, main = PROGRAMS[kind]
    owner = f"ns{uuid.uuid4().hex[:6]}"
    first = await pool.run(loop_request(kind, code, main=main, key=f"{owner}/a@1", value={"name": "1"}))
    assert result(first) == {"greeting": "Hello 1"}
    key = artefact_key(owner_of(f"{owner}/a@1"), kind, main, code, False)
    assert pool.artefacts.get(key), "the compilation was kept"
    # Another revision: another container, whose /init gets the artefact instead of compiling.
    second = await pool.run(loop_request(kind, code, main=main, key=f"{owner}/a@2", value={"name": "2"}))
    assert result(second) == {"greeting": "Hello 2"}
    assert second.cold and second.container != first.container
    assert second.init_ms is not None and first.init_ms is not None
    assert second.init_ms < first.init_ms, (first.init_ms, second.init_ms)
    # Another namespace with the same code compiles for itself.
    other = f"other{uuid.uuid4().hex[:6]}"
    assert artefact_key(owner_of(f"{other}/a@1"), kind, main, code, False) != key


async def test_a_java_jar_with_main_naming_the_class(pool: ContainerPool) -> None:
    """OpenWhisk's Java actions are jars. The host has no JDK: the jar is made of the classes the java
    runtime itself compiled from source (the artefact the pool kept), as `jar` would lay them out."""
    import base64
    import io
    import zipfile

    need(pool, "java:17")
    code, main = PROGRAMS["java:17"]
    owner = f"jar{uuid.uuid4().hex[:6]}"
    assert result(
        await pool.run(loop_request("java:17", code, main=main, key=f"{owner}/src@1", value={"name": "s"}))
    )
    artefact = pool.artefacts.get(artefact_key(owner, "java:17", main, code, False))
    assert artefact is not None
    jar = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(artefact)) as classes, zipfile.ZipFile(jar, "w") as out:
        out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        for name in classes.namelist():
            out.writestr(name.removeprefix("classes/"), classes.read(name))
    code_jar = base64.b64encode(jar.getvalue()).decode()
    outcome = await pool.run(
        loop_request(
            "java:17", code_jar, main="Hello", binary=True, key=f"{owner}/jar@1", value={"name": "Jar"}
        )
    )
    assert result(outcome) == {"greeting": "Hello Jar"}


@pytest.mark.parametrize(
    ("kind", "code", "main"),
    [
        (
            "go:1.19",
            "package main\n\nfunc Main(args map[string]interface{}) map[string]interface{} {\n",
            "main",
        ),
        ("java:17", PROGRAMS["java:17"][0], "NoSuchClass"),
        ("ruby:3.1", "def main(params)\n", "main"),
        ("php:8.2", "<?php\nfunction other(array $a): array { return []; }\n", "main"),
    ],
)
async def test_code_that_does_not_compile_or_load_fails_init(
    pool: ContainerPool, kind: str, code: str, main: str
) -> None:
    need(pool, kind)
    outcome = await pool.run(loop_request(kind, code, main=main, key=f"ns/bad-{uuid.uuid4().hex[:6]}@1"))
    assert outcome.init_status == 502, outcome
    assert json.loads(outcome.init_body) == {"error": "Cannot start action. Check logs for details."}
    assert outcome.logs, "the compiler's or the interpreter's complaint is in the logs"
