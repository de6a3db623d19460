"""Throttle decisions with OpenWhisk's 429 messages, the calendar-minute counter, and the in-flight gauge."""

from __future__ import annotations

import asyncio

import pytest

from broker import limits
from broker.admin import fill_limits
from broker.config import Settings
from broker.namespaces import NamespaceLimits
from broker.throttles import (
    InFlightGauge,
    MinuteCounter,
    too_many_in_flight,
    too_many_per_minute,
)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Stream:
    """Stands in for the INVOKE stream: messages per namespace, and the reads made of it."""

    def __init__(self, **held: int) -> None:
        self.held = dict(held)
        self.reads: list[str | None] = []

    async def read(self, namespace: str | None) -> int:
        self.reads.append(namespace)
        await asyncio.sleep(0)
        return sum(self.held.values()) if namespace is None else self.held.get(namespace, 0)


def test_a_rate_passes_up_to_its_limit_and_then_says_how_far_past_it_is() -> None:
    assert too_many_per_minute(1, 2) is None
    assert too_many_per_minute(2, 2) is None
    assert too_many_per_minute(3, 2) == "Too many requests in the last minute (count: 3, allowed: 2)."
    assert too_many_per_minute(1, 0) == "Too many requests in the last minute (count: 1, allowed: 0)."


def test_concurrency_counts_those_in_flight_before_the_new_ones() -> None:
    assert too_many_in_flight(0, 1) is None
    assert too_many_in_flight(29, 30) is None
    assert too_many_in_flight(30, 30) == "Too many concurrent requests in flight (count: 30, allowed: 30)."
    assert too_many_in_flight(28, 30, adding=2) is None
    assert too_many_in_flight(29, 30, adding=2) == (
        "Too many concurrent requests in flight (count: 29, allowed: 30)."
    )


def test_the_minute_counter_counts_per_key_and_restarts_when_the_calendar_minute_turns() -> None:
    clock = Clock(120.0)
    counter = MinuteCounter(clock)
    assert [counter.add(("invoke", "a")) for _ in range(3)] == [1, 2, 3]
    assert counter.add(("invoke", "b")) == 1
    assert counter.add(("fire", "a")) == 1
    assert counter.add(("invoke", "a"), 5) == 8
    clock.now = 179.999  # the same minute, however late in it
    assert counter.add(("invoke", "a")) == 9
    clock.now = 180.0  # a fixed window: the count restarts at the turn, not 60 s after the first request
    assert counter.add(("invoke", "a")) == 1
    assert counter.add(("invoke", "b")) == 1


async def test_a_quiet_stream_admits_without_reading_the_namespace_and_is_read_once_per_ttl() -> None:
    stream, clock = Stream(other=3), Clock()
    gauge = InFlightGauge(stream.read, ttl_s=0.2, monotonic=clock)
    for _ in range(5):
        assert await gauge.admit("ns", allowed=100) is None
    assert stream.reads == [None]  # 3 + 5 in the whole stream cannot pass 100 for anyone
    clock.now = 0.25
    assert await gauge.admit("ns", allowed=100) is None
    assert stream.reads == [None, None]


async def test_a_busy_stream_reads_the_namespace_and_refuses_with_its_count() -> None:
    stream, clock = Stream(ns=3, other=50), Clock()
    gauge = InFlightGauge(stream.read, ttl_s=0.2, settle_reads=0, monotonic=clock)
    assert await gauge.admit("ns", allowed=3) == (
        "Too many concurrent requests in flight (count: 3, allowed: 3)."
    )
    assert stream.reads == [None, "ns"]
    # A refusal from a reading with nothing admitted since is kept for the ttl: no read per refused request.
    assert await gauge.admit("ns", allowed=3) is not None
    assert stream.reads == [None, "ns"]
    stream.held["ns"] = 1  # two finished
    clock.now = 0.3
    assert await gauge.admit("ns", allowed=3) is None
    assert await gauge.admit("ns", allowed=3) is None


async def test_own_admissions_count_until_a_fresh_reading_says_otherwise() -> None:
    stream, clock = Stream(ns=1, other=50), Clock()
    gauge = InFlightGauge(stream.read, ttl_s=0.2, monotonic=clock)
    assert await gauge.admit("ns", allowed=3) is None  # 1 in the stream
    assert await gauge.admit("ns", allowed=3) is None  # 1 + 1 admitted
    reads = len(stream.reads)
    # 1 + 2 admitted would refuse, so the namespace is read again first: the admitted two finished already.
    assert await gauge.admit("ns", allowed=3) is None
    assert stream.reads[reads:] == ["ns"]
    # Now they are there: 3 in the stream, a later reading, and a refusal that names them.
    stream.held["ns"] = 3
    clock.now = 0.3
    assert await gauge.admit("ns", allowed=3) == (
        "Too many concurrent requests in flight (count: 3, allowed: 3)."
    )


async def test_a_refusal_waits_for_runs_that_ended_a_moment_ago_to_leave_the_stream() -> None:
    """The caller heard its last run's result before the invoker removed the run's message: its next call is
    admitted once a reading shows it gone, not refused on the reading that still had it."""
    stream = Stream(ns=1, other=50)

    async def read(namespace: str | None) -> int:
        count = await stream.read(namespace)
        if namespace == "ns" and stream.reads.count("ns") == 2:
            stream.held["ns"] = 0  # the message is removed between the first and second reading
        return count

    gauge = InFlightGauge(read, ttl_s=0.2, settle_reads=5, settle_poll_s=0.01)
    assert await gauge.admit("ns", allowed=1) is None
    assert stream.reads == [None, "ns", "ns", "ns"]


async def test_a_refusal_stands_after_its_settle_reads_which_refused_requests_share() -> None:
    stream = Stream(ns=3, other=50)
    gauge = InFlightGauge(stream.read, ttl_s=0.2, settle_reads=4, settle_poll_s=0.02)
    answers = await asyncio.gather(*(gauge.admit("ns", allowed=3) for _ in range(30)))
    assert answers == ["Too many concurrent requests in flight (count: 3, allowed: 3)."] * 30
    # One reading, then one per pause for all 30 together (a pause's waiters share a reading that started
    # within it): not 30 x 4.
    assert 1 + 4 <= stream.reads.count("ns") <= 1 + 2 * 4, stream.reads


async def test_concurrent_requests_share_one_read() -> None:
    stream = Stream(ns=0)
    gauge = InFlightGauge(stream.read, ttl_s=10)
    answers = await asyncio.gather(*(gauge.admit("ns", allowed=100) for _ in range(20)))
    assert answers == [None] * 20
    assert stream.reads == [None]


async def test_admissions_made_while_a_read_is_on_its_way_stay_counted() -> None:
    stream, clock, gate, reading = Stream(ns=0, other=100), Clock(), asyncio.Event(), asyncio.Event()
    gate.set()

    async def read(namespace: str | None) -> int:
        if namespace is not None:
            reading.set()
            await gate.wait()
        return await stream.read(namespace)

    gauge = InFlightGauge(read, ttl_s=0.2, monotonic=clock)
    assert await gauge.admit("ns", allowed=3) is None  # a reading of 0, and 1 admitted
    gate.clear()
    reading.clear()
    clock.now = 1.0
    pending = asyncio.ensure_future(gauge.admit("ns", allowed=3))  # reads the namespace again, held back
    await reading.wait()
    stream.held["ns"] = 1  # the first one reached the stream before the read
    gauge._count_admitted("ns", 1)  # another, admitted meanwhile, may not have
    gate.set()
    assert await pending is None  # 1 read + 1 admitted during the read + itself = 3
    reads = len(stream.reads)
    # 1 read + 2 admitted + 1 would pass 3: the namespace is read again (had the one admitted during the
    # read been dropped, 1 + 1 + 1 would have passed on the reading as it stood).
    assert await gauge.admit("ns", allowed=3) is None
    assert stream.reads[reads:] == ["ns"]


async def test_a_failed_read_reaches_every_waiter_and_the_next_request_reads_again() -> None:
    calls = 0

    async def failing(namespace: str | None) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise RuntimeError("down")
        return 0

    gauge = InFlightGauge(failing, ttl_s=10)
    results = await asyncio.gather(*(gauge.admit("ns", 5) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await gauge.admit("ns", 5) is None
    assert calls == 2


def test_settings_are_the_system_values_of_the_limit_documents() -> None:
    settings = Settings(invocations_per_minute=7, concurrent_invocations=3, fires_per_minute=9)
    defaults = limits.namespace_defaults(settings)
    doc = limits.system_limits_document(defaults)
    assert (doc["actions_per_minute"], doc["concurrent_actions"], doc["triggers_per_minute"]) == (7, 3, 9)
    plain = limits.effective_limits(NamespaceLimits(), defaults)
    assert (plain.invocationsPerMinute, plain.concurrentInvocations, plain.firesPerMinute) == (7, 3, 9)
    assert plain.maxActionInstances == 3
    own = limits.effective_limits(NamespaceLimits(firesPerMinute=1), defaults)
    assert (own.invocationsPerMinute, own.firesPerMinute) == (7, 1)
    assert limits.namespace_defaults(Settings()) == limits.NamespaceDefaults()


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (
            NamespaceLimits(),
            NamespaceLimits(invocationsPerMinute=10, concurrentInvocations=2, firesPerMinute=3),
        ),
        (
            NamespaceLimits(concurrentInvocations=5),
            NamespaceLimits(invocationsPerMinute=10, concurrentInvocations=5, firesPerMinute=3),
        ),
        (
            NamespaceLimits(invocationsPerMinute=0, concurrentInvocations=1, firesPerMinute=1),
            NamespaceLimits(invocationsPerMinute=0, concurrentInvocations=1, firesPerMinute=1),
        ),
    ],
)
def test_filling_limits_keeps_those_set(current: NamespaceLimits, expected: NamespaceLimits) -> None:
    fallback = NamespaceLimits(invocationsPerMinute=10, concurrentInvocations=2, firesPerMinute=3)
    assert fill_limits(current, fallback) == expected
