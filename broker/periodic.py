"""Background loops that run a step every few seconds and stop when told, not when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

log = logging.getLogger("squall.periodic")

STOP_GRACE_S: Final = 5.0


class Periodic:
    """`async with Periodic(step, every_s, name=…)`: runs `await step()` every `every_s` seconds (first
    right away with `at_once`) until the block ends.

    The loop stops on an event it waits on, not by cancellation: on Python 3.11 a cancellation that arrives
    while the step is inside `asyncio.wait_for` (as nats-py's requests are) can be swallowed (gh-86296), and
    a loop that lost its cancellation runs, and its owner waits on it, forever. A step still running at the
    stop gets `STOP_GRACE_S` to finish, then is cancelled, and left behind if it swallows that too.
    """

    def __init__(
        self, step: Callable[[], Awaitable[None]], every_s: float, *, name: str, at_once: bool = False
    ) -> None:
        self.step = step
        self.every_s = every_s
        self.name = name
        self.at_once = at_once
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Periodic:
        self._task = asyncio.create_task(self._run(), name=self.name)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_S)
        if not done:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=1.0)
            if not done:
                log.warning("%s did not stop; left behind", self.name)

    async def _run(self) -> None:
        if self.at_once:
            await self.step()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)
            if not self._stop.is_set():
                await self.step()
