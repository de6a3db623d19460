"""A broker role (`squall serve broker`) in a child process that tests SIGKILL, and what its tests share."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from broker.bus import JetStreamBus
from broker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SQUALL = Path(sys.executable).with_name("squall")


def isolated_settings(nats_url: str, mongo_uri: str, tmp_path: Path) -> Settings:
    return Settings(
        nats_url=nats_url,
        mongodb_uri=mongo_uri,
        mongodb_database=f"rel_{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path,
        broker_ack_wait_s=2.0,  # how soon the work of a killed broker comes back
    )


class BrokerProcess:
    """`squall serve broker` (or another `role`) as a child process, killed without warning on request."""

    def __init__(
        self, settings: Settings, log: Path, role: str = "broker", env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_path = log
        self.role = role
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
        env |= {
            "SQUALL_NATS_URL": self.settings.nats_url,
            "SQUALL_MONGODB_URI": self.settings.mongodb_uri,
            "SQUALL_MONGODB_DATABASE": self.settings.mongodb_database,
            "SQUALL_BROKER_ACK_WAIT_S": str(self.settings.broker_ack_wait_s),
        } | self.extra_env
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(SQUALL), "serve", self.role], env=env, stdout=log, stderr=log, cwd=ROOT
            )

    async def wait_running(self, deadline_s: float = 30) -> None:
        end = time.monotonic() + deadline_s
        while f"{self.role} role running" not in self.log_path.read_text().split("--- start ---")[-1]:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < end, (
                f"{self.role} not running in {deadline_s} s:\n{self.log_path.read_text()}"
            )
            await asyncio.sleep(0.05)

    async def restart_after_kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        with self.log_path.open("a") as log:
            log.write("\n--- start ---\n")
        self.start()
        await self.wait_running()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def consumers(bus: JetStreamBus) -> str:
    """Where the messages are, for a failure message."""
    report = []
    for stream in ("TRIGGERS", "INVOKE", "ACTIVATIONS"):
        for info in await bus.js.consumers_info(stream):
            report.append(
                f"{stream}/{info.name}: pending {info.num_pending}, ack pending {info.num_ack_pending}, "
                f"redelivered {info.num_redelivered}, waiting {info.num_waiting}"
            )
    return "\n".join(report)
