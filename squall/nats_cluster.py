"""A NATS cluster on one machine: several `nats-server` processes routed together on loopback, JetStream on each.

For `squall cluster up` and the cluster tests: the real clustering of NATS (routes, JetStream's Raft groups, R3
streams), with nothing of Squall's own in between. Each node keeps its client port across a restart, so the
comma-separated URL list handed to every role stays right when a killed node comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
import nats.errors
from nats.js.api import StorageType

from squall.embedded import EmbeddedNats, free_port, write_private

CLUSTER_NAME = "squall"
PROBE_STREAM = "squall_quorum_probe"
# How long the nodes may take to elect a JetStream meta leader once all of them answer.
QUORUM_DEADLINE_S = 30.0


class NatsNode(EmbeddedNats):
    """One clustered `nats-server`: its client port and route port are chosen once and kept across restarts."""

    def __init__(
        self,
        data_dir: Path,
        name: str,
        port: int,
        route_port: int,
        routes: list[int],
        *,
        sync_interval: str = "",
    ) -> None:
        super().__init__(data_dir, port, sync_interval=sync_interval)
        self.name = name
        self.route_port = route_port
        self.routes = routes

    def _command(self, executable: str) -> list[str]:
        # Everything a cluster needs is only sayable in a config file (server name, cluster block).
        routes = ", ".join(
            f"nats-route://{self.host}:{port}" for port in self.routes if port != self.route_port
        )
        jetstream = f'store_dir: "{self.data_dir / "jetstream"}"'
        if self.sync_interval:
            jetstream += f'\n  sync_interval: "{self.sync_interval}"'
        config = self.data_dir / "nats.conf"
        write_private(
            config,
            f'server_name: "{self.name}"\n'
            f'listen: "{self.host}:{self.port}"\n'
            f"jetstream {{\n  {jetstream}\n}}\n"
            # A cluster of one is a plain server (JetStream refuses a cluster block without routes).
            + (
                f'cluster {{\n  name: "{CLUSTER_NAME}"\n  listen: "{self.host}:{self.route_port}"\n'
                f"  routes: [{routes}]\n}}\n"
                if routes
                else ""
            ),
        )
        return [executable, "-c", str(config), "--ports_file_dir", str(self.data_dir)]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as a machine dying would: no goodbye to the cluster, nothing flushed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def restart(self) -> None:
        """Start again on the same ports and store: the node rejoins and catches its streams up."""
        await self.__aenter__()


class NatsCluster:
    """`async with NatsCluster(data_dir, size=3) as cluster:` starts the nodes, waits for a JetStream quorum, and
    stops them all on exit. `cluster.url` is the comma-separated client URL list of every node."""

    def __init__(self, data_dir: Path, size: int = 3, *, sync_interval: str = "") -> None:
        if size < 1:
            raise ValueError("a NATS cluster needs at least one node")
        self.data_dir = Path(data_dir)
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsNode(
                self.data_dir / f"n{i + 1}",
                f"n{i + 1}",
                free_port(),
                route_ports[i],
                route_ports,
                sync_interval=sync_interval,
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.address for node in self.nodes)

    async def __aenter__(self) -> Self:
        try:
            # Together: a lone node of a cluster cannot form JetStream, and waits for its peers.
            await asyncio.gather(*(node.__aenter__() for node in self.nodes))
            await self.wait_quorum()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        await asyncio.gather(
            *(node.__aexit__(None, None, None) for node in self.nodes), return_exceptions=True
        )

    async def wait_quorum(self, deadline_s: float = QUORUM_DEADLINE_S) -> None:
        """Until JetStream places a stream on every running node (a meta leader is elected and has them all)."""
        deadline = time.monotonic() + deadline_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(
                    self.url.split(","), connect_timeout=1.0, max_reconnect_attempts=1, error_cb=_quiet
                )
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.2)
                continue
            try:
                # A meta leader answers account requests before a restarted peer is back in the placement
                # pool; a stream over every running node proves they all are.
                js = nc.jetstream(timeout=2.0)
                replicas = min(3, sum(node.running for node in self.nodes))
                await js.add_stream(
                    name=PROBE_STREAM,
                    subjects=[PROBE_STREAM],
                    num_replicas=replicas,
                    storage=StorageType.MEMORY,
                )
                await js.delete_stream(PROBE_STREAM)
                return
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                last = exc
            finally:
                await nc.close()
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the NATS cluster formed no JetStream quorum in {deadline_s:.0f} s: {last!r}")


async def _quiet(exc: Exception) -> None:
    """nats-py prints every failed attempt; here a node still starting (or killed on purpose) is expected."""
