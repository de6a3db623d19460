"""Issue 12 items 5 and 7 probed as a hostile second tenant would, against a real `squall standalone` with two
namespaces: quotas answer OpenWhisk-shaped 4xx, listings of large actions keep the server responsive, no 409
tells a stranger which names exist, `/invokers` shows no host or pid, a deleted namespace leaves nothing to
its successor, the embedded NATS wants credentials, and a rotated guest key survives a restart."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest

from broker.config import GUEST_KEY
from squall import runtime_file
from tests.conditions import eventually
from tests.e2e.test_standalone import SQUALL, Standalone, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MB = 1024 * 1024
PING_BUDGET_S = 0.1
FORBIDDEN = "The supplied authentication is not authorized to access"


@dataclass(slots=True)
class Tenants:
    standalone: Standalone
    data_dir: Path
    alice: httpx.Client  # the victim
    mallory: httpx.Client  # the hostile tenant, with small quotas
    mallory_key: str


def admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SQUALL), "admin", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def client(url: str, key: str) -> httpx.Client:
    user, _, secret = key.partition(":")
    return httpx.Client(base_url=f"{url}/api/v1", auth=(user, secret), timeout=60)


def new_namespace(data_dir: Path, name: str, *limits: str) -> str:
    done = admin(data_dir, "namespace", "create", name, *limits)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    workdir = tmp_path_factory.mktemp("security-storage")
    data_dir = workdir / "data"
    standalone = Standalone(data_dir, free_port(), workdir / "standalone.log")
    tenants: Tenants | None = None
    try:
        standalone.wait_ready()
        alice_key = new_namespace(data_dir, "alice")
        mallory_key = new_namespace(data_dir, "mallory", "--max-entities", "25", "--max-dead-letters", "5")
        with client(standalone.url, alice_key) as alice, client(standalone.url, mallory_key) as mallory:
            tenants = Tenants(standalone, data_dir, alice, mallory, mallory_key)
            yield tenants
    finally:
        # A test may have restarted it: the one running now is `tenants.standalone`.
        for run in (standalone, tenants.standalone if tenants is not None else standalone):
            if run.proc.poll() is None:
                run.stop()


def ping_during(url: str, probe: Callable[[], None]) -> list[float]:
    """Run `probe` in a thread while pinging the server; the ping latencies seen meanwhile."""

    async def main() -> list[float]:
        task = asyncio.create_task(asyncio.to_thread(probe))
        seen: list[float] = []
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            while not task.done() or not seen:
                started = time.monotonic()
                r = await c.get("/ping")
                assert r.status_code == 200
                seen.append(time.monotonic() - started)
                await asyncio.sleep(0.02)
        await task
        return seen

    return asyncio.run(main())


def code(size: int) -> str:
    return "# " + "x" * size + "\ndef main(args):\n    return args\n"


def test_entity_quota_is_a_403_in_openwhisks_shape(tenants: Tenants) -> None:
    m = tenants.mallory
    limits = m.get("/namespaces/_/limits").json()
    assert limits["maxEntities"] == 25 and limits["maxDeadLetters"] == 5
    answers = [
        m.put(f"/namespaces/_/triggers/t{i}", json={}).status_code for i in range(limits["maxEntities"] + 3)
    ]
    assert answers[:25] == [200] * 25, answers
    assert answers[25:] == [403, 403, 403]
    refused = m.put("/namespaces/_/packages/one-more", json={})
    assert refused.status_code == 403
    body = refused.json()
    assert set(body) == {"error", "code"} and "limit of 25 entities" in body["error"]
    # Another namespace is not charged for mallory's entities.
    assert tenants.alice.put("/namespaces/_/triggers/mine", json={}).status_code == 200
    for i in range(25):
        assert m.delete(f"/namespaces/_/triggers/t{i}").status_code == 200


def test_listing_large_actions_reads_no_code_and_keeps_the_server_responsive(tenants: Tenants) -> None:
    m = tenants.mallory
    count, size = 12, 1 * MB
    for i in range(count):
        r = m.put(f"/namespaces/_/actions/big{i}", json={"exec": {"kind": "python:3", "code": code(size)}})
        assert r.status_code == 200, r.text

    listings: list[httpx.Response] = []

    def probe() -> None:
        for _ in range(5):
            listings.append(m.get("/namespaces/_/actions", params={"limit": 200}))

    pings = ping_during(tenants.standalone.url, probe)
    assert max(pings) < PING_BUDGET_S, pings
    for r in listings:
        assert r.status_code == 200
        assert len(r.content) < 64 * 1024  # summaries: 12 MB of code is nowhere in them
        assert {a["name"] for a in r.json()} >= {f"big{i}" for i in range(count)}
    for i in range(count):
        assert m.delete(f"/namespaces/_/actions/big{i}").status_code == 200


def test_names_of_another_namespace_do_not_leak_through_409s(tenants: Tenants) -> None:
    assert (
        tenants.alice.put(
            "/namespaces/_/actions/secret-plan", json={"exec": {"kind": "python:3", "code": code(10)}}
        ).status_code
        == 200
    )
    m = tenants.mallory
    probes = [
        # a read through a "package" that is really an action, and one that does not exist at all
        ("GET", "/namespaces/alice/packages/secret-plan", None),
        ("GET", "/namespaces/alice/packages/no-such-name", None),
        ("GET", "/namespaces/alice/actions/secret-plan/x", None),
        ("GET", "/namespaces/alice/actions/no-such-name/x", None),
        ("POST", "/namespaces/alice/actions/secret-plan/x", {}),
        # writes into alice's namespace, over an existing name and a free one
        ("PUT", "/namespaces/alice/actions/secret-plan", {"exec": {"kind": "python:3", "code": "x"}}),
        ("PUT", "/namespaces/alice/triggers/secret-plan", {}),
        ("PUT", "/namespaces/alice/triggers/free-name", {}),
        ("DELETE", "/namespaces/alice/actions/secret-plan", None),
        # a binding or a sequence naming alice's action as if it were a package
        ("PUT", "/namespaces/_/packages/b", {"binding": {"namespace": "alice", "name": "secret-plan"}}),
        (
            "PUT",
            "/namespaces/_/actions/seq",
            {"exec": {"kind": "sequence", "components": ["/alice/secret-plan/x"]}},
        ),
    ]
    for method, path, body in probes:
        r = m.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json()["error"].startswith(FORBIDDEN), (method, path, r.text)


def test_invokers_show_no_host_names_or_pids(tenants: Tenants) -> None:
    r = httpx.get(f"{tenants.standalone.url}/invokers")
    assert r.status_code == 200
    listing = r.json()
    assert listing and set(listing.values()) <= {"up", "unhealthy", "down"}
    text = r.text
    assert socket.gethostname() not in text
    assert str(tenants.standalone.proc.pid) not in text
    assert all(name == f"invoker{i}/{i}" for i, name in enumerate(listing))


def test_the_embedded_nats_wants_the_data_dirs_credentials(tenants: Tenants) -> None:
    info = runtime_file.read(tenants.data_dir)
    assert info is not None
    port = info.nats_url.rsplit(":", 1)[1]

    async def stranger() -> None:
        await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False, max_reconnect_attempts=0)

    with pytest.raises(Exception, match=r"(?i)authorization"):
        asyncio.run(stranger())
    mode = (tenants.data_dir / runtime_file.FILENAME).stat().st_mode
    assert mode & 0o077 == 0


def test_a_deleted_namespace_leaves_nothing_to_its_successor(tenants: Tenants) -> None:
    data_dir, url = tenants.data_dir, tenants.standalone.url
    key = new_namespace(data_dir, "ephemeral")
    with client(url, key) as eph:
        assert (
            eph.put(
                "/namespaces/_/actions/a", json={"exec": {"kind": "python:3", "code": code(10)}}
            ).status_code
            == 200
        )
        assert eph.put("/namespaces/_/triggers/t", json={}).status_code == 200
        assert eph.put("/namespaces/_/packages/p", json={}).status_code == 200
        run = eph.post("/namespaces/_/actions/a", params={"blocking": "true"}, json={"n": 1})
        assert run.status_code == 200, run.text

        async def recorded() -> bool:
            return bool(eph.get("/namespaces/_/activations").json())

        asyncio.run(eventually(recorded, what="the activation to be recorded"))
    done = admin(data_dir, "namespace", "delete", "ephemeral")
    assert done.returncode == 0, done.stderr
    with client(url, key) as old:
        assert old.get("/namespaces/_/actions").status_code == 401  # its keys went first
    key = new_namespace(data_dir, "ephemeral")
    with client(url, key) as successor:
        for collection in ("actions", "triggers", "packages", "rules"):
            r = successor.get(f"/namespaces/_/{collection}")
            assert r.status_code == 200 and r.json() == [], (collection, r.text)
        r = successor.get("/namespaces/_/deadletters", params={"count": "true"})
        assert r.status_code == 200 and r.json() == {"deadletters": 0}, r.text

        # The namesake's activation records go at the broker's next retention sweep (every 5 s).
        async def no_records() -> bool:
            return bool(successor.get("/namespaces/_/activations").json() == [])

        asyncio.run(eventually(no_records, deadline_s=20, what="the namesake's records to be swept"))


def test_admin_refuses_namespace_names_with_a_slash(tenants: Tenants) -> None:
    for args in (
        ("namespace", "create", "a/b"),
        ("namespace", "delete", "alice/x"),
        ("key", "rotate", "../alice"),
    ):
        done = admin(tenants.data_dir, *args)
        assert done.returncode == 1, (args, done.stdout)
        assert "Traceback" not in done.stdout + done.stderr
        assert "not allowed" in done.stdout + done.stderr
    assert tenants.alice.get("/namespaces").json() == ["alice"]  # alice untouched


def test_a_rotated_guest_key_stays_rotated_after_a_restart(tenants: Tenants) -> None:
    standalone, data_dir = tenants.standalone, tenants.data_dir
    guest = tuple(GUEST_KEY.split(":", 1))
    assert httpx.get(f"{standalone.url}/api/v1/namespaces", auth=guest).status_code == 200
    done = admin(data_dir, "key", "rotate", "guest")
    assert done.returncode == 0, done.stderr
    rotated = done.stdout.strip().splitlines()[-1]
    standalone.stop()
    again = Standalone(data_dir, standalone.port, data_dir.parent / "restart.log")
    tenants.standalone = again
    again.wait_ready()
    assert httpx.get(f"{again.url}/api/v1/namespaces", auth=guest).status_code == 401
    assert GUEST_KEY not in again.output()
    r = httpx.get(f"{again.url}/api/v1/namespaces", auth=tuple(rotated.split(":", 1)))
    assert r.status_code == 200 and r.json() == ["guest"]
    assert os.path.exists(data_dir / "guest-seeded")
