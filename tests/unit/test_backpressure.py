"""Backpressure's pure decisions: booking event-driven runs into minutes, deferral, the maximum wait, queues."""

from __future__ import annotations

import msgspec

from broker.invocations import Invocation
from broker.queues import namespaces_with_runs, subject_of
from broker.throttles import MinuteBooking
from runtimes.invoker import MAX_ATTEMPTS, first_start, overdue, poison_limit, throttled_message


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(**extra: object) -> Invocation:
    fields: dict[str, object] = {"activationId": "a" * 32, "namespace": "ns", "action": "ns/act", **extra}
    return msgspec.convert(fields, Invocation)


def test_runs_past_the_rate_are_booked_into_the_first_minutes_with_room() -> None:
    clock = Clock(600.5)  # minute 10
    booking = MinuteBooking(clock)
    assert [booking.book("ns", 2) for _ in range(2)] == [None, None]  # now
    assert [booking.book("ns", 2) for _ in range(2)] == [660_000, 660_000]  # minute 11
    assert booking.book("ns", 2) == 720_000  # minute 12
    assert booking.book("other", 2) is None  # namespaces book apart
    clock.now = 725.0  # minute 12 has begun: one of its two places is taken
    assert booking.book("ns", 2) is None
    assert booking.book("ns", 2) == 780_000
    clock.now = 900.0  # minute 15: nothing booked there
    assert booking.book("ns", 2) is None


def test_a_deferred_run_waits_for_its_minute_and_spends_one_delivery_on_it() -> None:
    deferred = run(rule="ns/r", not_before=120_000, published=100_000)
    assert poison_limit(deferred) == MAX_ATTEMPTS + 1
    assert poison_limit(run(rule="ns/r")) == MAX_ATTEMPTS
    assert first_start(deferred, 2) and not first_start(deferred, 3)
    assert first_start(run(), 1) and not first_start(run(), 2)


def test_only_event_driven_runs_time_out_in_their_queue() -> None:
    max_wait = 60_000
    waited = run(rule="ns/r", published=1_000)
    assert not overdue(waited, 61_000, max_wait)
    assert overdue(waited, 61_001, max_wait)
    # A deferral past the maximum wait is overdue at once: it could never start in time.
    assert overdue(run(rule="ns/r", published=1_000, not_before=70_000), 2_000, max_wait)
    # An HTTP caller's run is never dead-lettered for waiting: it was admitted under the limits.
    assert not overdue(run(published=1_000), 10**9, max_wait)
    assert throttled_message(max_wait).startswith("The run did not start within 60 s of its event")


def test_a_run_waits_in_the_queue_of_the_namespace_that_caused_it() -> None:
    shared = run(namespace="caller", action="owner/pkg/act")
    assert subject_of(shared) == "invoke.caller.owner=2Fpkg=2Fact"
    counts = {"invoke.a.x": 2, "invoke.b=2Ec.y": 1, "invoke.d.z": 0}
    assert namespaces_with_runs(counts) == {"a", "b.c"}
