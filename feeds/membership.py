"""Which feeds processes are alive, and which of them owns a feed: heartbeats in KV, rendezvous hashing.

Each feeds process puts a heartbeat in the members bucket a few times per `timeout_s` and follows the bucket;
a member not heard from for `timeout_s` is dead, and one that stops says so by deleting its key, so the others
take its feeds over at once. Every process computes the same owner for a feed from the same live set
(rendezvous hashing: a member's death moves only its own feeds). While views differ for a moment, two
processes may both fire an instant: its idempotency key makes the second fire a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from broker import codec, subjects
from broker.bus import JetStreamBus
from broker.clock import now_ms
from broker.entity_store import is_tombstone
from broker.periodic import Periodic

log = logging.getLogger("squall.feeds")

BEATS_PER_TIMEOUT: Final = 4


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    at: int  # epoch ms
    started: int = 0
    host: str = ""  # where the process runs, for an operator looking at the bucket
    pid: int = 0


def owner_of(key: str, members: Iterable[str]) -> str | None:
    """The member that owns `key`: the highest hash of (member, key) — rendezvous hashing."""
    best: tuple[bytes, str] | None = None
    for member in members:
        score = hashlib.blake2b(f"{member}\x1f{key}".encode(), digest_size=8).digest()
        if best is None or (score, member) > best:
            best = (score, member)
    return None if best is None else best[1]


def alive(last_seen: dict[str, float], now: float, timeout_s: float) -> frozenset[str]:
    """The members heard from within `timeout_s` (monotonic seconds)."""
    return frozenset(member for member, seen in last_seen.items() if now - seen <= timeout_s)


class Membership:
    """`async with Membership(bus, on_change=…)`: this process is a member until the block ends; `live` is the
    current live set (this member always in it), `on_change()` is called when it changes."""

    def __init__(
        self,
        bus: JetStreamBus,
        *,
        timeout_s: float,
        on_change: Callable[[], None] = lambda: None,
        member_id: str | None = None,
    ) -> None:
        self.bus = bus
        self.id = member_id or uuid.uuid4().hex[:12]
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.started = now_ms()
        self._last_seen: dict[str, float] = {}
        self.live: frozenset[str] = frozenset({self.id})
        self.ready = asyncio.Event()  # set once the bucket's backlog (the members already there) is read
        self._sub: Any = None
        self._beating = Periodic(self._beat, timeout_s / BEATS_PER_TIMEOUT, name=f"feeds-member-{self.id}")

    async def __aenter__(self) -> Membership:
        self._kv = await self.bus.kv(subjects.FEEDS_MEMBERS_BUCKET)
        await self._put()
        self._sub = await self.bus.follow(
            f"KV_{subjects.FEEDS_MEMBERS_BUCKET}", f"$KV.{subjects.FEEDS_MEMBERS_BUCKET}.>", self._on_beat
        )
        await self._beating.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._beating.__aexit__(exc_type, exc, tb)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        with contextlib.suppress(Exception):  # best effort: without it the others wait for the timeout
            await self._kv.delete(subjects.token(self.id))

    async def _put(self) -> None:
        beat = Heartbeat(
            id=self.id, at=now_ms(), started=self.started, host=socket.gethostname(), pid=os.getpid()
        )
        await self._kv.put(subjects.token(self.id), codec.encode(beat))

    async def _beat(self) -> None:
        try:
            await self._put()
        except Exception as exc:  # NATS away for a moment: the next beat will tell
            log.warning("feeds heartbeat of %s not published: %s", self.id, exc)
        self._refresh()

    async def _on_beat(self, msg: Msg) -> None:
        member = subjects.untoken(msg.subject.rsplit(".", 1)[-1])
        if is_tombstone(msg.headers):
            self._last_seen.pop(member, None)
        else:
            try:
                beat = codec.decode(msg.data, Heartbeat)
            except Exception:
                return
            # A beat read from the backlog is as old as it says (the wall clocks of members agree well
            # enough for a timeout of seconds); a live one is new.
            age_s = max(0.0, (now_ms() - beat.at) / 1000)
            self._last_seen[member] = time.monotonic() - age_s
        self._refresh()
        with contextlib.suppress(Exception):
            if msg.metadata.num_pending == 0:
                self.ready.set()

    def _refresh(self) -> None:
        live = alive(self._last_seen, time.monotonic(), self.timeout_s) | {self.id}
        if live != self.live:
            log.info("feeds members: %s", ", ".join(sorted(live)))
            self.live = live
            self.on_change()

    def owns(self, key: str) -> bool:
        return owner_of(key, self.live) == self.id
