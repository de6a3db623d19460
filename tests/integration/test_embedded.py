"""The embedded servers start, answer, and leave no process behind however their context ends."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from pymongo import AsyncMongoClient

from broker.errors import Unavailable
from squall.embedded import NATS_CREDENTIALS_FILE, EmbeddedMongo, EmbeddedNats, free_port, nats_credentials

_PR_SET_CHILD_SUBREAPER = 36


def _alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """Live processes in a process group (the embedded server's group: it and any child it spawned)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _assert_gone(pid: int | None) -> None:
    assert pid is not None
    assert not _alive(pid), f"process {pid} survived its context"
    assert _group_members(pid) == [], "a child of the embedded server survived"


async def test_session_fixtures_answer(nats_url: str, mongo_uri: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    try:
        assert (await client.admin.command("ping"))["ok"] == 1
    finally:
        await client.close()


async def test_nats_starts_answers_and_stops(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path) as server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        pid = server.pid
        assert pid is not None
        assert _alive(pid)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.x", b"hello")
        assert ack.seq == 1
        await nc.close()
    _assert_gone(pid)
    # JetStream really used file storage under data_dir.
    assert any((tmp_path / "jetstream").rglob("*.blk"))


async def test_mongo_starts_answers_and_stops(tmp_path: Path) -> None:
    async with EmbeddedMongo(tmp_path) as server:
        assert server.uri == f"mongodb://127.0.0.1:{server.port}/"
        pid = server.pid
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.uri)
        await client.db.c.insert_one({"_id": 1, "x": "y"})
        assert await client.db.c.find_one({"_id": 1}) == {"_id": 1, "x": "y"}
        await client.close()
    _assert_gone(pid)
    assert list((tmp_path / "db").glob("*.db")), "db files live under data_dir"


async def test_mongo_restarts_on_same_data_dir_and_keeps_data(tmp_path: Path) -> None:
    async with EmbeddedMongo(tmp_path) as server:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(server.uri)
        await client.db.c.insert_one({"_id": "kept"})
        await client.close()
    async with EmbeddedMongo(tmp_path) as server:
        client = AsyncMongoClient(server.uri)
        assert await client.db.c.count_documents({}) == 1
        await client.close()


@pytest.mark.parametrize("server_type", [EmbeddedNats, EmbeddedMongo])
async def test_port_in_use_gives_unavailable(tmp_path: Path, server_type: type[EmbeddedNats]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(Unavailable) as caught:
            await server_type(tmp_path, port=port).__aenter__()
    message = caught.value.message
    assert str(port) in message
    assert "in use" in message.lower()
    assert "\n" not in message


@pytest.mark.parametrize("server_type", [EmbeddedNats, EmbeddedMongo])
async def test_port_held_by_a_live_server_is_not_mistaken_for_ours(
    tmp_path: Path, server_type: type[EmbeddedNats]
) -> None:
    async with server_type(tmp_path / "first") as first:
        second = server_type(tmp_path / "second", port=first.port)
        with pytest.raises(Unavailable, match="in use"):
            await second.__aenter__()
        _assert_gone(second.pid)
        assert _alive(first.pid or 0)


async def test_exception_in_body_stops_server(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    with pytest.raises(RuntimeError):
        async with server:
            raise RuntimeError("boom")
    _assert_gone(server.pid)


async def test_cancellation_stops_server(tmp_path: Path) -> None:
    server = EmbeddedMongo(tmp_path)
    entered = asyncio.Event()

    async def hold() -> None:
        async with server:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_gone(server.pid)


_ORPHAN_SCRIPT = """
import asyncio, sys
from collections.abc import Iterator
from pathlib import Path
from squall.embedded import EmbeddedMongo, EmbeddedNats

async def main():
    async with EmbeddedNats(Path(sys.argv[1]) / "n") as n, EmbeddedMongo(Path(sys.argv[1]) / "m") as m:
        print(n.pid, m.pid, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """Adopt orphaned descendants while inside, so the test can reap them instead of leaving zombies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
async def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    with _subreaper():
        await _kill_parent_and_watch_servers(tmp_path)


async def _kill_parent_and_watch_servers(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 20)
    pids = [int(p) for p in line.split()]
    assert len(pids) == 2
    assert all(_alive(p) for p in pids)
    parent.kill()  # SIGKILL: no __aexit__ runs, only the kernel's parent-death signal can help
    await parent.wait()
    for _ in range(200):  # up to 10 s for them to shut down
        if not any(_alive(p) for p in pids):
            break
        await asyncio.sleep(0.05)
    for pid in pids:
        _reap(pid)  # they were adopted by this process (subreaper)
        _assert_gone(pid)


async def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port


async def test_nats_can_sync_every_acknowledged_message(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path, sync_interval="always") as server:
        config = await asyncio.to_thread((tmp_path / "nats.conf").read_text)
        assert config == 'jetstream {\n  sync_interval: "always"\n}\n'
        assert server.pid is not None
        cmdline = (await asyncio.to_thread(Path(f"/proc/{server.pid}/cmdline").read_bytes)).split(b"\0")
        assert b"-c" in cmdline and str(tmp_path / "nats.conf").encode() in cmdline
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        assert (await js.publish("t.x", b"synced")).seq == 1
        await nc.close()


async def test_authenticated_nats_refuses_strangers_and_keeps_its_credentials(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path, authenticated=True) as server:
        assert "@" in server.url
        nc = await nats.connect(server.url)  # the data dir's credentials work
        assert nc.is_connected
        await nc.close()
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(server.address, allow_reconnect=False, max_reconnect_attempts=0)
        first_url = server.url
    for secret_file in (tmp_path / NATS_CREDENTIALS_FILE, tmp_path / "nats.conf"):
        assert secret_file.stat().st_mode & 0o077 == 0, secret_file  # 0600: other local users cannot read
    # The next boot of the data dir uses the same credentials (clients configured with them keep working).
    assert nats_credentials(tmp_path) == tuple(first_url.split("//")[1].split("@")[0].split(":"))
