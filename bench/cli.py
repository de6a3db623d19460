"""The `squall` CLI's responsiveness: `activation list` over 10,000 records, and `activation tail` at 500/s.

Run: .venv/bin/python bench/cli.py [--records 10000] [--rate 500] [--seconds 10] [--reps 20]

It starts an embedded nats-server and MongoDB wire server (temporary dirs) and the API in a child process,
seeds `--records` activation records of one namespace straight into MongoDB, then measures:

- `activation list` (30 and 200 rows, a name filter, `--full`), run in this process through click (the command's
  own cost: request, decoding, the rich table) and as a fresh `squall` process (what a user waits for).
  Floors, same run: the same GET with a bare httpx client (the API's cost alone), and `python -c pass` plus
  `import squall.cli` (the interpreter's start-up).
- `activation tail --json` as a real process, while records are published to ACTIVATIONS at `--rate`/s: every
  record's latency from just before its publish to its line read from the tail's stdout, p50/p99, records lost,
  and the tail process's CPU. Floor, same run: a raw SSE reader of the same stream (no client library).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stream import NAMESPACE, Subscriber, pct  # noqa: E402

from broker import codec, subjects  # noqa: E402
from broker.activation_store import ActivationStore, to_document  # noqa: E402
from broker.activations import SUCCESS, Activation, make_response, new_activation_id  # noqa: E402
from broker.bus import JetStreamBus  # noqa: E402
from broker.config import Settings  # noqa: E402
from broker.entities import KeyValue  # noqa: E402

SQUALL = Path(sys.executable).with_name("squall")
ACTIONS = ("hello", "pkg/resize", "orders", "thumbnail")


def record(i: int, start: int, sent: float = 0.0, name: str | None = None) -> Activation:
    return Activation(
        namespace=NAMESPACE,
        name=name or ACTIONS[i % len(ACTIONS)].split("/")[-1],
        subject=NAMESPACE,
        activationId=new_activation_id(),
        start=start,
        end=start + 3,
        duration=3,
        response=make_response(SUCCESS, {"sent": sent, "i": i}),
        logs=[f"2026-01-01T00:00:00.000Z stdout: line {i}"],
        version="0.0.1",
        publish=False,
        annotations=[
            KeyValue(key="path", value=f"{NAMESPACE}/{ACTIONS[i % len(ACTIONS)]}"),
            KeyValue(key="kind", value="python:3.11"),
        ],
    )


async def seed(settings: Settings, count: int) -> None:
    async with ActivationStore.from_settings(settings) as store:
        await store.provision()
        # After the namespace's creation (older records would belong to a deleted namesake), 1 ms apart.
        now = int(time.time() * 1000)
        for offset in range(0, count, 1000):
            docs = [to_document(record(i, now + i)) for i in range(offset, min(count, offset + 1000))]
            await store.collection.insert_many(docs, ordered=False)


def timed(reps: int, call: object) -> list[float]:
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return samples


def row(label: str, samples: list[float], floor: list[float], floor_label: str) -> None:
    p50, f50 = statistics.median(samples) * 1000, statistics.median(floor) * 1000
    print(
        f"{label:<44} p50 {p50:7.1f} ms  p99 {pct(samples, 0.99):7.1f} ms   "
        f"{floor_label:<30} p50 {f50:7.1f} ms   x {p50 / f50:5.1f}"
    )


def measure_list(url: str, key: str, env: dict[str, str], reps: int) -> None:
    from click.testing import CliRunner

    from squall.cli import main

    runner = CliRunner()
    api = httpx.Client(base_url=f"{url}/api/v1", auth=tuple(key.split(":", 1)))  # type: ignore[arg-type]
    path = f"/namespaces/{NAMESPACE}/activations"
    cases = [
        ("activation list", [], {}),
        ("activation list --limit 200", ["--limit", "200"], {"limit": 200}),
        ("activation list hello --limit 200", ["hello", "--limit", "200"], {"limit": 200, "name": "hello"}),
        ("activation list --full --limit 200", ["--full", "--limit", "200"], {"limit": 200, "docs": "true"}),
    ]
    print(f"\n{'in-process command (request + decode + table)':<44} {'':>34} floor: the same GET, bare httpx")
    for label, args, params in cases:

        def command(args: list[str] = args) -> None:
            result = runner.invoke(main, ["activation", "list", *args], env=env)
            assert result.exit_code == 0, result.output

        def floor(params: dict[str, object] = params) -> None:
            api.get(path, params=params).raise_for_status()  # type: ignore[arg-type]

        command()
        row(label, timed(reps, command), timed(reps, floor), "bare GET")
    print(f"\n{'a fresh `squall` process':<44} {'':>34} floor: python -c 'import squall.cli'")
    process_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}

    def fresh() -> None:
        subprocess.run(
            [str(SQUALL), "activation", "list", "--limit", "200"],
            env=process_env,
            check=True,
            capture_output=True,
        )

    def interpreter() -> None:
        subprocess.run(
            [sys.executable, "-c", "import squall.cli"], env=process_env, check=True, capture_output=True
        )

    row(
        "squall activation list --limit 200",
        timed(max(5, reps // 2), fresh),
        timed(max(5, reps // 2), interpreter),
        "import squall.cli",
    )
    api.close()


class TailReader:
    """`squall activation tail --json` as a process; each line's latency from the record's send time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(SQUALL), "activation", "tail", "--json"],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        assert self.proc.stdout is not None
        decode = msgspec.json.Decoder().decode
        for line in self.proc.stdout:
            now = time.perf_counter()
            self.latencies.append(now - decode(line)["response"]["result"]["sent"])

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def publish_at(bus: JetStreamBus, rate: int, seconds: float) -> int:
    subject = subjects.activation_subject(NAMESPACE, "live")
    start, sent, acks = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - start) < seconds:
        while sent < int(elapsed * rate) + 1:
            now = int(time.time() * 1000)
            acks.append(
                await bus.publish_async(subject, codec.encode(record(sent, now, time.perf_counter(), "live")))
            )
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*acks)
    return sent


async def measure_tail(
    bus: JetStreamBus, port: int, key: str, env: dict[str, str], args: argparse.Namespace
) -> None:
    tail = TailReader(env)
    raw = Subscriber(port, key)
    await raw.open()
    await asyncio.sleep(2.0)  # the tail process is up and its stream open (it starts with the next record)
    cpu_before = tail.cpu_s()
    sent = await publish_at(bus, args.rate, args.seconds)
    deadline = time.monotonic() + 30
    while (len(tail.latencies) < sent or raw.received < sent) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    cpu = tail.cpu_s() - cpu_before
    tail.stop()
    await raw.close()
    received = len(tail.latencies)
    print(f"\nactivation tail at {args.rate} records/s for {args.seconds:.0f} s ({sent} records):")
    print(
        f"  squall activation tail --json   p50 {pct(tail.latencies, 0.5):7.2f} ms  p99 {pct(tail.latencies, 0.99):7.2f} ms"
        f"  received {received}/{sent}  CPU {cpu / args.seconds * 100:4.1f} % of a core"
    )
    print(
        f"  floor: raw SSE reader          p50 {pct(raw.latencies, 0.5):7.2f} ms  p99 {pct(raw.latencies, 0.99):7.2f} ms"
        f"  received {raw.received}/{sent}"
    )
    print(
        f"  ratio p50 x {pct(tail.latencies, 0.5) / pct(raw.latencies, 0.5):.1f}, "
        f"p99 x {pct(tail.latencies, 0.99) / pct(raw.latencies, 0.99):.1f}"
    )


async def run(args: argparse.Namespace) -> None:
    from squall.embedded import EmbeddedMongo, EmbeddedNats

    with tempfile.TemporaryDirectory() as tmp:
        async with (
            EmbeddedNats(Path(tmp) / "nats") as nats_server,
            EmbeddedMongo(Path(tmp) / "mongo") as mongo,
        ):
            settings = Settings(nats_url=nats_server.url, mongodb_uri=mongo.uri)
            child = subprocess.Popen(  # noqa: ASYNC220 (once, at start)
                [sys.executable, str(ROOT / "bench" / "stream.py"), "--serve", nats_server.url, mongo.uri],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                text=True,
            )
            assert child.stdout is not None and child.stdin is not None
            _, port_text, key = (await asyncio.to_thread(child.stdout.readline)).split()
            url = f"http://127.0.0.1:{port_text}"
            started = time.perf_counter()
            await seed(settings, args.records)
            print(f"seeded {args.records:,} records in {time.perf_counter() - started:.1f} s")
            (Path(tmp) / "wskprops").write_text(f"APIHOST={url}\nAUTH={key}\nNAMESPACE={NAMESPACE}\n")
            env = {"WSK_CONFIG_FILE": str(Path(tmp) / "wskprops"), "COLUMNS": "200"}
            try:
                await asyncio.to_thread(measure_list, url, key, env, args.reps)
                async with JetStreamBus(Settings(nats_url=nats_server.url)) as bus:
                    await measure_tail(bus, int(port_text), key, env, args)
            finally:
                child.stdin.close()
                child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
