"""Waiting on conditions with deadlines: the tests' one alternative to sleeping and hoping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def eventually(
    condition: Callable[[], Awaitable[bool]], deadline_s: float = 15.0, what: str = "the condition"
) -> None:
    """Return once `condition()` is true; fail the test, naming `what`, when `deadline_s` passes first."""
    deadline = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.05)
