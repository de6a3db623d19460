"""`squall cluster up`: a whole Squall cluster on one machine, for trying it and for the cluster tests.

Three clustered `nats-server` nodes (JetStream R3, squall/nats_cluster.py), one MongoDB (the embedded wire server
unless SQUALL_MONGODB_URI names a real one), and each role as separate `squall serve ROLE` processes — by default
2 API, 2 broker, 2 invoker and 2 feeds — exactly what runs on N hosts, only all on loopback. There is no load
balancer: clients are given every API URL. The invokers share one rootless Podman service started here, so
that the death of the invoker which happened to start it cannot take the engine from the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec
from rich.console import Console

from broker.admin import ensure_namespace
from broker.bus import JetStreamBus
from broker.config import Settings
from broker.entity_store import EntityStore
from broker.errors import Unavailable
from runtimes.podman_service import PodmanService
from squall.embedded import EmbeddedMongo, die_with_parent, find_binary, free_port
from squall.invocation_secret import with_invocation_secret
from squall.nats_cluster import NatsCluster
from squall.standalone import GUEST_LIMITS, stop_event

# The order roles start in: consumers before the API that feeds them (nothing would be lost either way: the
# streams hold the work until a consumer comes).
ROLES = ("broker", "feeds", "invoker", "api")
ROLE_START_DEADLINE_S = 60.0
ROLE_STOP_DEADLINE_S = 15.0


def settings_env(settings: Settings) -> dict[str, str]:
    """`SQUALL_*` variables for every setting that differs from its default: what a child process needs to
    build the same Settings with `Settings.from_env`."""
    defaults = Settings().to_env()
    return {name: value for name, value in settings.to_env().items() if defaults.get(name) != value}


class RoleProcess:
    """One `squall serve ROLE` child, its output in a log file; killable without warning, and restartable."""

    def __init__(self, role: str, index: int, env: Mapping[str, str], log_path: Path) -> None:
        self.role = role
        self.index = index
        self.env = dict(env)
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log_from = 0

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                find_binary("squall"),
                "serve",
                self.role,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent,  # a cluster whose supervisor died leaves nothing running
            )

    async def wait_running(self, deadline_s: float = ROLE_START_DEADLINE_S) -> None:
        """Until the role says it serves (the line `squall serve` prints once it does)."""
        end = time.monotonic() + deadline_s
        while f"{self.role} role" not in self.output():
            if not self.running:
                raise Unavailable(f"{self.name} exited while starting: {self.output()[-2000:]}")
            if time.monotonic() > end:
                raise Unavailable(
                    f"{self.name} not running after {deadline_s:.0f} s: {self.output()[-2000:]}"
                )
            await asyncio.sleep(0.1)

    def output(self) -> str:
        """What the process wrote since its last start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_from)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what it held comes back to the others after its ack wait."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def restart(self) -> None:
        await self.kill()
        await self.start()
        await self.wait_running()

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), ROLE_STOP_DEADLINE_S)
        except TimeoutError:
            await self.kill()


class LocalCluster:
    """`async with LocalCluster(settings) as cluster:` — the NATS cluster, MongoDB, and the role processes;
    `cluster.api_urls` are the APIs, `cluster.settings` what a client process of the cluster would use."""

    def __init__(
        self,
        settings: Settings,
        *,
        nats_nodes: int = 3,
        apis: int = 2,
        brokers: int = 2,
        invokers: int = 2,
        feeds: int = 2,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.counts = {"api": apis, "broker": brokers, "invoker": invokers, "feeds": feeds}
        self.nats = NatsCluster(self.data_dir / "nats", nats_nodes, sync_interval=settings.nats_sync)
        self.processes: list[RoleProcess] = []
        self.api_urls: list[str] = []
        self._stack = contextlib.AsyncExitStack()

    def of(self, role: str) -> list[RoleProcess]:
        return [process for process in self.processes if process.role == role]

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            mongodb_uri = self.settings.mongodb_uri
            if not mongodb_uri:
                mongo = await stack.enter_async_context(EmbeddedMongo(self.data_dir / "mongo"))
                mongodb_uri = mongo.uri
            await stack.enter_async_context(self.nats)
            replicas = min(3, len(self.nats.nodes))
            settings = msgspec.structs.replace(
                self.settings.with_backbone(self.nats.url, mongodb_uri), replicas=replicas
            )
            # One secret for every API (which seals callers' keys) and every invoker (which opens them).
            self.settings = settings = with_invocation_secret(settings)
            await self._prepare_backbone(settings)
            if self.counts["invoker"]:
                await stack.enter_async_context(PodmanService(settings))
            stack.push_async_callback(self._stop_processes)
            await self._start_processes(settings)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @staticmethod
    async def _prepare_backbone(settings: Settings) -> None:
        """The topology at R3 and the guest namespace, once, before eight processes race to do the same."""
        async with JetStreamBus(settings) as bus:
            await bus.provision()
            await ensure_namespace(
                EntityStore(bus), settings.guest_namespace, settings.guest_key, limits=GUEST_LIMITS
            )

    async def _start_processes(self, settings: Settings) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
        api_ports = [free_port(settings.api_host) for _ in range(self.counts["api"])]
        self.api_urls = [f"http://{settings.api_host}:{port}" for port in api_ports]
        for role in ROLES:
            for index in range(self.counts[role]):
                # Invokers tell actions an API to call back (`__OW_API_HOST`): they take turns.
                port = api_ports[index % len(api_ports)] if api_ports else settings.api_port
                own = msgspec.structs.replace(
                    settings, api_port=port, data_dir=self.data_dir / "roles" / f"{role}-{index + 1}"
                )
                env = inherited | settings_env(own)
                log = self.data_dir / "logs" / f"{role}-{index + 1}.log"
                self.processes.append(RoleProcess(role, index + 1, env, log))
        await asyncio.gather(*(process.start() for process in self.processes))
        await asyncio.gather(*(process.wait_running() for process in self.processes))

    async def _stop_processes(self) -> None:
        # APIs first (no new work), then the rest: each drains what it holds.
        await asyncio.gather(*(p.stop() for p in self.processes if p.role == "api"))
        await asyncio.gather(*(p.stop() for p in self.processes if p.role != "api"))


async def run_cluster(settings: Settings, console: Console, **counts: int) -> None:
    """`squall cluster up`: start everything, print how to reach it, run until Ctrl-C/SIGTERM."""
    stop = stop_event()
    async with LocalCluster(settings, **counts) as cluster:
        urls = " ".join(cluster.api_urls)
        console.print(
            f"[bold]squall:[/] cluster up: {len(cluster.nats.nodes)} NATS nodes (R{cluster.settings.replicas}), "
            + ", ".join(f"{n} {role}" for role, n in cluster.counts.items())
        )
        for url in cluster.api_urls:
            console.print(f"  API:        {url}/api/v1")
        console.print(f"  NATS:       {cluster.settings.nats_url}", soft_wrap=True)
        console.print(f"  logs:       {cluster.data_dir / 'logs'}")
        console.print(
            f"  try:        squall --apihost {cluster.api_urls[0]} -u <guest key> action list", soft_wrap=True
        )
        console.print(
            f"  clients:    give them every API URL ({urls}); no load balancer here", soft_wrap=True
        )
        await stop.wait()
        console.print("[bold]squall:[/] stopping the cluster")
