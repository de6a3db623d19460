"""Trigger fires: accepted/s with one rule, fire → action start latency, one fire fanned out to many rules.

Run: .venv/bin/python bench/fire.py [--seconds 5] [--concurrency 48] [--latency 500] [--rules 50] [--reps 20]
                                    [--nats-sync always]  (the cost of fsync before every JetStream ack)
     .venv/bin/python bench/fire.py --url http://127.0.0.1:3233 --key UUID:SECRET --nats nats://… [--pid PID]
                                    [--mongodb mongodb://…]  (a running server with a rule engine and an invoker)

Without --url it starts `squall standalone` on a free port with a temporary data dir (embedded NATS and
MongoDB, the guest key and its benchmark-sized limits, the invoker's pool), as bench/api.py does. The client
runs in this process. In one run it prints:

- accepted: `POST …/triggers/{name}` answered 202 per second, from `--concurrency` callers, for a trigger with
  one active rule on a no-op Python action; then the wait until every fire's trigger record and rule-fired
  run is stored in MongoDB (the count is checked: records = fires x (1 + rules)), and the CPU the server's
  process tree spent per fire end to end. Floors, in the same run: the same client against a bare Starlette
  endpoint answering 202 under uvicorn (no auth, no store, no JetStream), and JetStream alone: the stored
  trigger event's bytes published to a stream of TRIGGERS' configuration, pipelined (`JetStreamBus.
  publish_async`), and from `--concurrency` publishers each waiting for its ack, as the fire route does.
  For the stored rate: the MongoDB wire server alone, the run's stored records read back and inserted again
  (new ids, a scratch collection) with `insert_many` in the recorder's batch size, one batch at a time.
  The client is a lean one (prepared HTTP/1.1 request bytes on keep-alive connections, status line and
  Content-Length parsed, nothing else): a general-purpose client saturates first on a small machine. Its own
  CPU share is printed, since it runs on the cores it measures.
- latency: fires one at a time over one keep-alive connection; for each, from just before the request is
  written to the rule-fired run's `start` (epoch ms in its record, seen on a core NATS subscription to
  `activation.…` as the invoker publishes it; the ms field truncates, so figures read up to 1 ms low), and
  to the record's arrival. Reference: a non-blocking invoke of the same action, measured the same way.
- fan-out: one fire of a trigger with `--rules` active rules on one no-op action, from the request to the
  arrival of the last of its rule-fired records (each checked: `cause` = the fire's id, ids = those in the
  trigger record's `logs`). Reference: the same number of invocations published straight to INVOKE in one
  batch, to the last record.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from processes import free_port, process_tree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.invoke import Api, percentile  # noqa: E402
from broker.config import GUEST_KEY, GUEST_NAMESPACE, Settings  # noqa: E402

BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BODY = b'{"bench":"fire"}'
ACTION_MEMORY = 256
FLOOR_STREAM = "BENCH_FIRE_FLOOR"
# A floor's rate is steady within seconds; a minute of pipelined publishes (~2 M msg ids) outgrew JetStream's
# 5-s acknowledgement while it tracked their duplicate window.
FLOOR_MAX_S = 10.0
INSERT_FLOOR_RECORDS = 20_000  # records read back and inserted again for the MongoDB floor


class Record(msgspec.Struct):
    """The fields of an activation record the bench reads."""

    activationId: str
    name: str
    start: int
    cause: str | None = None
    logs: list[str] = []


class LogLine(msgspec.Struct):
    """One line of a trigger record's `logs`."""

    statusCode: int
    success: bool
    activationId: str | None = None
    error: str | None = None


_record = msgspec.json.Decoder(Record)
_line = msgspec.json.Decoder(LogLine)


# -- processes -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def process(
    cmd: list[str], ready_url: str, deadline_s: float = 60, settings: dict[str, str] | None = None
) -> Iterator[int]:
    """Run a server until the block ends; yields its pid once `ready_url` answers. Only `settings` of the
    SQUALL_* variables reach it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")} | (settings or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        end = time.monotonic() + deadline_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {proc.returncode} during start-up")
            try:
                urllib.request.urlopen(ready_url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > end:
                    raise SystemExit(f"{ready_url} did not answer within {deadline_s} s") from None
                time.sleep(0.05)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the lean client -----------------------------------------------------------------------------------------


def post_request(path: str, auth: str | None, body: bytes = BODY) -> bytes:
    """A prepared `POST` with a keep-alive connection's headers."""
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
    if auth:
        head += f"Authorization: {auth}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request/response on a keep-alive connection: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return status, b""
    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
    return status, await reader.readexactly(length) if length else b""


@dataclass
class Burst:
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)  # process name -> CPU s

    @property
    def accepted(self) -> int:
        return self.statuses[202]

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def refused(self) -> dict[int, int]:
        return {status: n for status, n in self.statuses.items() if status != 202}


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_by_name(pid: int | None) -> dict[str, float]:
    """User + system CPU seconds of a process tree, summed by process name (from /proc)."""
    if pid is None:
        return {}
    out: dict[str, float] = {}
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{p}/stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def machine_busy(seconds: float = 1.0) -> float:
    """Cores the whole machine kept busy over `seconds` (from /proc/stat): other work skews every figure."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return (1 - (idle1 - idle0) / max(1, total1 - total0)) * (os.cpu_count() or 1)


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


async def burst(
    host: str, port: int, request: bytes, seconds: float, concurrency: int, server_pid: int | None
) -> Burst:
    """`concurrency` callers, one request at a time each, on keep-alive connections, until the deadline."""
    result = Burst()
    loop = asyncio.get_running_loop()
    connections = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    deadline = 0.0

    async def caller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        statuses, latencies, clock = result.statuses, result.latencies, time.perf_counter
        while loop.time() < deadline:
            started = clock()
            status, _ = await exchange(reader, writer, request)
            latencies.append(clock() - started)
            statuses[status] += 1

    cpu_before, server_before = own_cpu_s(), cpu_by_name(server_pid)
    started = loop.time()
    deadline = started + seconds
    try:
        await asyncio.gather(*(caller(r, w) for r, w in connections))
    finally:
        result.seconds = loop.time() - started
        result.client_cpu_s = own_cpu_s() - cpu_before
        result.server_cpu = cpu_delta(server_before, cpu_by_name(server_pid))
        for _, writer in connections:
            writer.close()
    return result


# -- the floor: a bare Starlette endpoint in its own process -------------------------------------------------


def serve_floor(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def fire(request: Request) -> Response:
        await request.body()
        aid = uuid.uuid4().hex
        return Response(
            b'{"activationId":"%s"}' % aid.encode(),
            status_code=202,
            media_type="application/json",
            headers={"x-openwhisk-activation-id": aid},
        )

    async def ready(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    app = Starlette(routes=[Route("/floor/{name}", fire, methods=["POST"]), Route("/", ready)])
    # The uvicorn options api/server.py uses, so that the two servers differ in the application only; the
    # API's role processes run on uvloop where it is installed, so this one does too ("auto").
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="auto",
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
    )


# -- the floor: JetStream alone ------------------------------------------------------------------------------


@dataclass
class PublishFloor:
    pipelined: float  # messages stored per second
    waiting: float  # with `concurrency` publishers each awaiting its ack
    payload_bytes: int
    client_cores: float  # CPU share of this process, pipelined run


async def publish_floor(nats_url: str, payload: bytes, seconds: float, concurrency: int) -> PublishFloor:
    from broker import subjects
    from broker.activations import new_activation_id
    from broker.bus import JetStreamBus, PubAck
    from broker.topology import topology

    settings = Settings(nats_url=nats_url)
    triggers = next(s for s in topology(settings).streams if s.name == subjects.TRIGGERS_STREAM)
    floor = msgspec.structs.replace(triggers, name=FLOOR_STREAM, subjects=("benchfirefloor.>",))
    subject = "benchfirefloor.guest.bench"
    async with JetStreamBus(settings, name="bench-fire-floor") as bus:
        await bus.provision_stream(floor)
        try:
            loop = asyncio.get_running_loop()
            # Pipelined: send without waiting; JetStreamBus keeps up to 4096 acks outstanding.
            futures: list[asyncio.Future[PubAck]] = []
            cpu_before = own_cpu_s()
            started = loop.time()
            deadline = started + seconds
            while loop.time() < deadline:
                for _ in range(500):
                    futures.append(await bus.publish_async(subject, payload, msg_id=new_activation_id()))
            acks = await asyncio.gather(*futures)
            pipelined_s = loop.time() - started
            client_cores = (own_cpu_s() - cpu_before) / pipelined_s
            assert all(not a.duplicate for a in acks)
            # As the route does it: each publisher waits for its ack before the next message.
            count = 0

            async def publisher() -> None:
                nonlocal count
                while loop.time() < deadline:
                    await bus.publish(subject, payload, msg_id=new_activation_id())
                    count += 1

            started = loop.time()
            deadline = started + seconds
            await asyncio.gather(*(publisher() for _ in range(concurrency)))
            waiting_s = loop.time() - started
            stored = (await bus.js.stream_info(FLOOR_STREAM)).state.messages
            if stored != len(acks) + count:
                raise SystemExit(f"floor stream holds {stored} messages, {len(acks) + count} were acked")
        finally:
            await bus.js.delete_stream(FLOOR_STREAM)
    return PublishFloor(len(acks) / pipelined_s, count / waiting_s, len(payload), client_cores)


# -- the server ----------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    key: str
    nats_url: str
    pid: int | None
    mongodb_uri: str | None = None  # for the insert floor; the standalone's is read from standalone.json

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    @property
    def auth(self) -> str:
        return "Basic " + base64.b64encode(self.key.encode()).decode()


@contextlib.contextmanager
def standalone(nats_sync: str = "", extra: dict[str, str] | None = None) -> Iterator[Server]:
    """`squall standalone` on a free port and a temporary data dir, until the block ends; `extra`: more
    SQUALL_* settings."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="squall-bench-fire-") as tmp:
        data_dir = Path(tmp) / "data"
        cmd = [str(BIN / "squall"), "standalone", "--api-port", str(port), "--data-dir", str(data_dir)]
        url = f"http://127.0.0.1:{port}"
        settings = ({"SQUALL_NATS_SYNC": nats_sync} if nats_sync else {}) | (extra or {})
        with process(cmd, f"{url}/api/v1", settings=settings) as pid:
            # The API answers a moment before the standalone writes down where its servers are.
            info = data_dir / "standalone.json"
            deadline = time.monotonic() + 30
            while not info.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"the standalone wrote no {info}")
                time.sleep(0.02)
            found = json.loads(info.read_text())
            yield Server(url, GUEST_KEY, found["nats_url"], pid, found["mongodb_uri"])


def put(api: Api, collection: str, name: str, body: dict[str, Any]) -> None:
    status, reply = api.call("PUT", f"/api/v1/namespaces/_/{collection}/{name}?overwrite=true", body)
    if status != 200:
        raise SystemExit(f"PUT {collection}/{name}: HTTP {status} {reply}")


def trigger_with_rules(api: Api, trigger: str, action: str, rules: int) -> None:
    """A trigger and `rules` active rules, each on `action` (a no-op Python action of its own)."""
    api.put_action(action, ACTION_MEMORY)
    put(api, "triggers", trigger, {})
    for i in range(rules):
        put(api, "rules", f"{trigger}-rule-{i:02d}", {"trigger": f"/_/{trigger}", "action": f"/_/{action}"})


def count(api: Api, name: str) -> int:
    return api.count(name)


async def until_stored(api: Api, expected: dict[str, int], deadline_s: float = 180) -> float:
    """Wait until MongoDB holds `expected[name]` records of each name; returns when (perf_counter)."""
    started = time.perf_counter()
    while True:
        counts = {name: await asyncio.to_thread(count, api, name) for name in expected}
        if all(counts[name] >= n for name, n in expected.items()):
            if counts != expected:
                raise SystemExit(f"more records stored than fires accepted: {counts} > {expected}")
            return time.perf_counter()
        if time.perf_counter() - started > deadline_s:
            raise SystemExit(
                f"records stored after {deadline_s} s: {counts}, expected {expected} "
                "(a rule run refused, e.g. 429, is a line with an error in its trigger record's logs)"
            )
        await asyncio.sleep(0.1)


async def insert_floor(mongodb_uri: str, names: list[str], limit: int) -> float:
    """Records/s the MongoDB wire server stores alone: up to `limit` of this run's stored records (`names`),
    read back in their stored form, inserted again under new ids into a scratch collection of the same
    database, `insert_many` of the recorder's batch size, one batch at a time as the recorder writes them."""
    from pymongo import AsyncMongoClient

    from broker import subjects
    from broker.recorder import BATCH

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    try:
        database = client[Settings().mongodb_database]
        query = {"name": {"$in": names}}
        docs = await database[subjects.ACTIVATIONS_COLLECTION].find(query).limit(limit).to_list()
        for doc in docs:
            doc["_id"] = doc["activationId"] = uuid.uuid4().hex
        scratch = database[f"bench_insert_floor_{uuid.uuid4().hex[:6]}"]
        started = time.perf_counter()
        for i in range(0, len(docs), BATCH):
            await scratch.insert_many(docs[i : i + BATCH], ordered=False)
        elapsed = time.perf_counter() - started
        await scratch.drop()
        return len(docs) / elapsed if elapsed else 0.0
    finally:
        await client.close()


# -- the records, as the invoker and the rule engine publish them --------------------------------------------


class Watch:
    """A core NATS subscription to the records of some names: futures by activation id or by cause."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.subs: list[Any] = []
        self.by_id: dict[str, asyncio.Future[tuple[Record, float]]] = {}
        self.by_cause: dict[str, list[tuple[Record, float]]] = {}
        self.caused: dict[str, tuple[int, asyncio.Future[None]]] = {}  # cause -> (expected, all seen)

    async def watch(self, name: str) -> None:
        from broker import subjects

        self.subs.append(
            await self.nc.subscribe(subjects.activation_subject(GUEST_NAMESPACE, name), cb=self._on)
        )

    async def _on(self, msg: Any) -> None:
        seen = time.perf_counter()
        record = _record.decode(msg.data)
        fut = self.by_id.get(record.activationId)
        if fut is None:  # seen before anyone asked for it: kept for when they do
            fut = self.by_id[record.activationId] = asyncio.get_running_loop().create_future()
        if not fut.done():
            fut.set_result((record, seen))
        if record.cause is not None:
            runs = self.by_cause.setdefault(record.cause, [])
            runs.append((record, seen))
            expected, done = self.caused.get(record.cause, (0, None))
            if done is not None and len(runs) >= expected and not done.done():
                done.set_result(None)

    async def record(self, activation_id: str, timeout_s: float = 30) -> tuple[Record, float]:
        """The record of `activation_id` and when it was seen, whether it came already or comes later."""
        fut = self.by_id.get(activation_id)
        if fut is None:
            fut = self.by_id[activation_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        finally:
            if fut.done():
                del self.by_id[activation_id]

    async def runs_of(self, cause: str, expected: int, timeout_s: float = 60) -> list[tuple[Record, float]]:
        """The `expected` records caused by `cause`, and when each was seen."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.caused[cause] = (expected, done)
        if len(self.by_cause.get(cause, [])) >= expected:
            done.set_result(None)
        try:
            await asyncio.wait_for(done, timeout_s)
        finally:
            del self.caused[cause]
        runs = self.by_cause.pop(cause)
        for record, _ in runs:  # nobody asks for them by id
            self.by_id.pop(record.activationId, None)
        return runs

    async def close(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def rule_ids(trigger_record: Record) -> list[str]:
    """The rule-fired activation ids a trigger record's `logs` name; refuses a line that reports a failure."""
    ids = []
    for text in trigger_record.logs:
        line = _line.decode(text)
        if not line.success or line.activationId is None:
            raise SystemExit(f"trigger {trigger_record.activationId}: a rule did not run: {text}")
        ids.append(line.activationId)
    return ids


@dataclass
class Latency:
    to_start: list[float] = field(default_factory=list)  # ms, request written -> run's `start`
    to_record: list[float] = field(default_factory=list)  # ms, request written -> record seen
    to_202: list[float] = field(default_factory=list)  # ms, request written -> answer read


async def sequential(server: Server, watch: Watch, path: str, n: int, via_trigger: bool) -> Latency:
    """`n` requests one at a time; each waits for its run's record (the rule-fired one, for a fire)."""
    request = post_request(path, server.auth)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    out = Latency()
    try:
        for _ in range(n):
            wall_ms, started = time.time_ns() / 1e6, time.perf_counter()
            status, body = await exchange(reader, writer, request)
            answered = time.perf_counter()
            if status != 202:
                raise SystemExit(f"POST {path}: HTTP {status} {body[:200]!r}")
            aid = json.loads(body)["activationId"]
            if via_trigger:
                trigger_record, _ = await watch.record(aid)
                (run_id,) = rule_ids(trigger_record)
            else:
                run_id = aid
            run, seen = await watch.record(run_id)
            watch.by_cause.pop(aid, None)
            if via_trigger and run.cause != aid:
                raise SystemExit(f"run {run_id} has cause {run.cause}, not the fire's {aid}")
            out.to_start.append(run.start - wall_ms)
            out.to_record.append((seen - started) * 1000)
            out.to_202.append((answered - started) * 1000)
    finally:
        writer.close()
    return out


async def fan_out(server: Server, watch: Watch, trigger: str, rules: int, reps: int) -> list[float]:
    """`reps` fires of a trigger with `rules` rules: ms from the request to the last rule-fired record."""
    request = post_request(f"/api/v1/namespaces/_/triggers/{trigger}", server.auth)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    samples = []
    try:
        for _ in range(reps):
            await asyncio.sleep(0.1)
            started = time.perf_counter()
            status, body = await exchange(reader, writer, request)
            if status != 202:
                raise SystemExit(f"fire {trigger}: HTTP {status} {body[:200]!r}")
            aid = json.loads(body)["activationId"]
            runs = await watch.runs_of(aid, rules)
            trigger_record, _ = await watch.record(aid)
            samples.append((max(seen for _, seen in runs) - started) * 1000)
            expected = sorted(rule_ids(trigger_record))
            if len(expected) != rules or sorted(r.activationId for r, _ in runs) != expected:
                raise SystemExit(
                    f"fire {aid}: the runs do not match the trigger record's {len(expected)} rules"
                )
    finally:
        writer.close()
    return samples


async def direct_batch(nats_url: str, watch: Watch, action: str, size: int, reps: int) -> list[float]:
    """`size` invocations of `action` published to INVOKE in one batch: ms to the last record."""
    from broker import codec, subjects
    from broker.activations import new_activation_id
    from broker.bus import JetStreamBus, Outgoing
    from broker.health import now_ms
    from broker.invocations import Invocation

    samples = []
    subject = subjects.invoke_subject(GUEST_NAMESPACE, action)
    async with JetStreamBus(Settings(nats_url=nats_url), name="bench-fire-direct") as bus:
        for _ in range(reps):
            await asyncio.sleep(0.1)
            cause = new_activation_id()  # groups the batch's records, as a fire's id does
            started = time.perf_counter()
            batch = []
            for _ in range(size):
                aid = new_activation_id()
                inv = Invocation(
                    activationId=aid,
                    namespace=GUEST_NAMESPACE,
                    action=f"{GUEST_NAMESPACE}/{action}",
                    cause=cause,
                    published=now_ms(),
                )
                batch.append(Outgoing(subject=subject, payload=codec.encode(inv), msg_id=aid))
            await bus.publish_many(batch)
            runs = await watch.runs_of(cause, size)
            samples.append((max(seen for _, seen in runs) - started) * 1000)
    return samples


# -- the run -------------------------------------------------------------------------------------------------


def cores(burst_: Burst) -> str:
    parts = sorted(burst_.server_cpu.items(), key=lambda kv: -kv[1])
    shown = [f"{name} {cpu / burst_.seconds:.2f}" for name, cpu in parts if cpu > 0.01 * burst_.seconds]
    return ", ".join(shown)


def line(label: str, value: str = "", note: str = "") -> None:
    print(f"{label:<62} {value:>14}   {note}".rstrip())


async def measure(args: argparse.Namespace, server: Server, busy_before: float) -> None:
    from broker import subjects
    from broker.bus import JetStreamBus
    from broker.topology import event_queue

    api = Api(server.url, server.key)
    await asyncio.to_thread(api.wait_for_invoker)
    tag = uuid.uuid4().hex[:6]
    t_tput, a_tput = f"fire-tput-{tag}", f"noop-tput-{tag}"
    t_lat, a_lat = f"fire-lat-{tag}", f"noop-lat-{tag}"
    t_fan, a_fan = f"fire-fan-{tag}", f"noop-fan-{tag}"
    await asyncio.to_thread(trigger_with_rules, api, t_tput, a_tput, 1)
    await asyncio.to_thread(trigger_with_rules, api, t_lat, a_lat, 1)
    await asyncio.to_thread(trigger_with_rules, api, t_fan, a_fan, args.rules)

    async with JetStreamBus(Settings(nats_url=server.nats_url), name="bench-fire") as bus:
        watch = Watch(bus.nc)
        for name in (t_lat, a_lat, t_fan, a_fan):
            await watch.watch(name)

        # 1. Accepted fires/s, then every record stored.
        fire_path = f"/api/v1/namespaces/_/triggers/{t_tput}"
        request = post_request(fire_path, server.auth)
        cpu_before = cpu_by_name(server.pid)
        first = time.perf_counter()
        warm = await burst(server.host, server.port, request, args.warmup, args.concurrency, None)
        tput = await burst(server.host, server.port, request, args.seconds, args.concurrency, server.pid)
        fired = warm.accepted + tput.accepted
        behind = await bus.backlog(event_queue(bus.settings, GUEST_NAMESPACE))  # events not finished
        stored_at = await until_stored(api, {t_tput: fired, a_tput: fired})
        fire_cpu = cpu_delta(cpu_before, cpu_by_name(server.pid))
        inserts = (
            await insert_floor(server.mongodb_uri, [t_tput, a_tput], INSERT_FLOOR_RECORDS)
            if server.mongodb_uri
            else None
        )
        event = await bus.js.get_last_msg(
            subjects.TRIGGERS_STREAM, subjects.trigger_subject(GUEST_NAMESPACE, t_tput)
        )

        # Floors: the bare endpoint with the same client, then JetStream alone with the same event bytes.
        floor_seconds = min(args.seconds, FLOOR_MAX_S)
        floor_port = free_port()
        floor_cmd = [sys.executable, __file__, "--serve-floor", str(floor_port)]
        with process(floor_cmd, f"http://127.0.0.1:{floor_port}/") as floor_pid:
            floor_request = post_request("/floor/bench", server.auth)
            await burst("127.0.0.1", floor_port, floor_request, args.warmup, args.concurrency, None)
            floor = await burst(
                "127.0.0.1", floor_port, floor_request, floor_seconds, args.concurrency, floor_pid
            )
        nats_floor = await publish_floor(server.nats_url, event.data or b"", floor_seconds, args.concurrency)

        # 2. Fire -> action start, one fire at a time; reference: a non-blocking invoke of the same action.
        lat_fire = f"/api/v1/namespaces/_/triggers/{t_lat}"
        lat_invoke = f"/api/v1/namespaces/_/actions/{a_lat}"
        await sequential(server, watch, lat_fire, 50, True)  # the cold start, then let both ends settle
        latency = await sequential(server, watch, lat_fire, args.latency, True)
        await sequential(server, watch, lat_invoke, 50, False)
        invoke_latency = await sequential(server, watch, lat_invoke, args.latency, False)

        # 3. One fire, `rules` runs; reference: as many invocations published to INVOKE at once.
        await fan_out(server, watch, t_fan, args.rules, 3)  # brings up the pool's containers for the action
        fan = await fan_out(server, watch, t_fan, args.rules, args.reps)
        direct = await direct_batch(server.nats_url, watch, a_fan, args.rules, args.reps)
        await watch.close()

    # The report.
    print(
        f"\ntrigger fires: {os.cpu_count()} cores, {args.concurrency} callers, {args.seconds:g} s per rate; "
        f"cores busy before the run {busy_before:.2f} (other work on the machine skews every figure)"
    )
    http = "httptools" if importlib.util.find_spec("httptools") else "h11 (httptools is not installed)"
    print(f"1. fires accepted (202), one rule on a no-op Python action; uvicorn's HTTP parser: {http}")
    ratio_http = tput.rate / floor.rate if floor.rate else float("nan")
    p50, p99 = percentile(tput.latencies, 0.5) * 1000, percentile(tput.latencies, 0.99) * 1000
    refused = Counter(warm.refused) + Counter(tput.refused)
    line(
        "squall: POST /triggers/{name} -> 202",
        f"{tput.rate:8.0f} /s",
        f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  not 202: {dict(refused) or '-'}",
    )
    per_fire = sum(tput.server_cpu.values()) / max(1, tput.accepted) * 1000
    line("  server cores during it (process tree)", f"{per_fire:5.2f} ms/202", cores(tput))
    line("  client cores (this process)", f"{tput.client_cpu_s / tput.seconds:8.2f}", "")
    line(
        "floor: bare Starlette 202 under uvicorn, same client",
        f"{floor.rate:8.0f} /s",
        f"p50 {percentile(floor.latencies, 0.5) * 1000:.1f} ms  not 202: {floor.refused or '-'}",
    )
    line(
        "  server cores during it",
        f"{sum(floor.server_cpu.values()) / max(1, floor.accepted) * 1000:5.2f} ms/202",
        f"{sum(floor.server_cpu.values()) / floor.seconds:.2f}; client {floor.client_cpu_s / floor.seconds:.2f}",
    )
    line("  ratio squall / bare Starlette", f"{ratio_http:8.2f}", "")
    line(
        f"floor: JetStream publish, pipelined ({nats_floor.payload_bytes} B event)",
        f"{nats_floor.pipelined:8.0f} /s",
        f"client {nats_floor.client_cores:.2f} cores",
    )
    line("  ratio squall / JetStream pipelined", f"{tput.rate / nats_floor.pipelined:8.2f}", "")
    line(
        f"floor: JetStream publish, {args.concurrency} publishers awaiting acks",
        f"{nats_floor.waiting:8.0f} /s",
    )
    line("  ratio squall / JetStream awaited", f"{tput.rate / nats_floor.waiting:8.2f}", "")
    completed = fired / (stored_at - first)  # fires whose trigger record and run are both stored, per second
    line(
        "completed: trigger record + rule run stored, from the first fire",
        f"{completed:8.0f} /s",
        f"{fired} fires -> {fired} trigger records + {fired} runs in MongoDB (checked)",
    )
    if inserts is not None:
        line(
            "floor: the same records, insert_many alone (MongoDB wire server)",
            f"{inserts:8.0f} /s",
            f"records; squall stored {2 * completed:.0f} records/s, ratio {2 * completed / inserts:.2f}",
        )
    line(
        "  rule engine: events not yet handled when the burst ended",
        f"{behind:8d}",
        f"of {fired}: the backlog the engine, the invoker and the recorder work off after the burst",
    )
    line(
        "  server CPU per fire, end to end (API, engine, invoker, stores)",
        f"{sum(fire_cpu.values()) / fired * 1000:8.2f} ms",
        ", ".join(
            f"{name} {cpu / fired * 1000:.2f}"
            for name, cpu in sorted(fire_cpu.items(), key=lambda kv: -kv[1])
            if cpu / fired >= 0.00001
        ),
    )
    print("2. fire -> rule-fired action start, one fire at a time")
    report_latency("fire -> run `start` (record)", latency.to_start, invoke_latency.to_start)
    report_latency("fire -> run record seen on NATS", latency.to_record, invoke_latency.to_record)
    report_latency("fire -> 202 read", latency.to_202, invoke_latency.to_202)
    print(
        f"   reference (x): non-blocking invoke of the same action, measured the same way; n={args.latency}"
    )
    print(f"3. one fire -> {args.rules} rule-fired runs on one no-op action, {args.reps} fires")
    line(
        f"fire -> last of {args.rules} run records",
        f"p50 {statistics.median(fan):6.1f} ms",
        f"min {min(fan):.1f}  max {max(fan):.1f} ms; all runs' cause and ids checked",
    )
    ratio = statistics.median(fan) / statistics.median(direct)
    line(
        f"reference: {args.rules} invocations published to INVOKE -> last record",
        f"p50 {statistics.median(direct):6.1f} ms",
        f"min {min(direct):.1f}  max {max(direct):.1f} ms; ratio fire / reference {ratio:.2f}",
    )


def report_latency(label: str, samples: list[float], reference: list[float]) -> None:
    p99, ref50, ref99 = percentile(samples, 0.99), percentile(reference, 0.5), percentile(reference, 0.99)
    line(
        label,
        f"p50 {percentile(samples, 0.5):6.2f} ms",
        f"p99 {p99:.2f} ms   (x: p50 {ref50:.2f}, p99 {ref99:.2f} ms)",
    )


async def run(args: argparse.Namespace) -> None:
    if args.url:
        if not args.nats:
            raise SystemExit("--url needs --nats (the records are watched on NATS)")
        server = Server(args.url.rstrip("/"), args.key, args.nats, args.pid, args.mongodb)
        await measure(args, server, busy_before=machine_busy())
        return
    busy_before = machine_busy()
    extra = {}
    for item in args.set:
        name, _, value = item.partition("=")
        extra[f"SQUALL_{name.upper()}"] = value
    with standalone(args.nats_sync, extra) as server:
        await measure(args, server, busy_before)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", help="a running Squall with a rule engine and an invoker (default: start one)"
    )
    parser.add_argument("--key", default=GUEST_KEY, help="with --url: uuid:secret")
    parser.add_argument("--nats", help="with --url: its NATS URL")
    parser.add_argument("--pid", type=int, help="with --url: its pid, for the server CPU figures")
    parser.add_argument("--mongodb", help="with --url: its MongoDB URI, for the insert floor")
    parser.add_argument(
        "--nats-sync",
        default="",
        help="the standalone's JetStream fsync policy (SQUALL_NATS_SYNC), e.g. always; default nats-server's",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the standalone (SQUALL_<NAME>), e.g. single_process=true or event_loop=asyncio",
    )
    parser.add_argument("--concurrency", type=int, default=48, help="callers of the rate runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each rate run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured run before each rate run")
    parser.add_argument("--latency", type=int, default=500, help="sequential fires (and invokes) for latency")
    parser.add_argument("--rules", type=int, default=50, help="rules of the fan-out trigger")
    parser.add_argument("--reps", type=int, default=20, help="fires of the fan-out trigger")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
