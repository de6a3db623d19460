"""The invoker's run slots: bounded, and handed out in turn across namespaces."""

from __future__ import annotations

import asyncio

from runtimes.fair_gate import FairGate


async def test_slots_are_bounded_and_namespaces_take_turns() -> None:
    gate = FairGate(lambda: 1)
    started: list[str] = []
    release = asyncio.Event()

    async def run(namespace: str, n: int) -> None:
        async with gate.slot(namespace):
            started.append(f"{namespace}{n}")
            await release.wait()

    first = asyncio.create_task(run("a", 0))
    await asyncio.sleep(0)
    # A backlog of one namespace queued before a single run of another.
    tasks = [asyncio.create_task(run("a", n)) for n in range(1, 5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(run("b", 0)))
    await asyncio.sleep(0)
    assert started == ["a0"] and gate.holders == 1 and gate.waiting == 5
    release.set()
    await asyncio.gather(first, *tasks)
    # b's run comes second, not after a's whole backlog.
    assert started == ["a0", "a1", "b0", "a2", "a3", "a4"]
    assert gate.holders == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_leaves_no_trace_and_a_cancelled_holder_passes_its_slot_on() -> None:
    gate = FairGate(lambda: 1)
    await gate.acquire("a")
    waiter = asyncio.create_task(gate.acquire("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert gate.waiting == 0
    other = asyncio.create_task(gate.acquire("c"))
    await asyncio.sleep(0)
    gate.release()
    await other
    assert gate.holders == 1


async def test_more_capacity_serves_several_waiters_at_once() -> None:
    limit = 1
    gate = FairGate(lambda: limit)
    await gate.acquire("a")
    waiters = [asyncio.create_task(gate.acquire(ns)) for ns in "bcd"]
    await asyncio.sleep(0)
    limit = 4
    gate.release()
    await asyncio.gather(*waiters)
    assert gate.holders == 3
