"""`GET /invokers/pools` decided from heartbeats: ranked names like `GET /invokers`, states, and no host ids."""

from __future__ import annotations

from api.routes.invokers import pools
from broker.health import DOWN, OFFLINE_AFTER_MS, UP, Heartbeat

NOW = 1_700_000_000_000


def test_pools_are_ranked_oldest_first_with_their_state_and_load() -> None:
    young = Heartbeat(
        id="host-b/4242",
        started=NOW - 1_000,
        at=NOW - 200,
        capacity_mb=2048,
        free_mb=1792,
        warm=2,
        in_flight=1,
        completed=17,
        families=("python", "nodejs"),
    )
    old = Heartbeat(id="host-a/7", started=NOW - 60_000, at=NOW - OFFLINE_AFTER_MS - 1, capacity_mb=1024)
    found = pools([young, old], NOW)
    assert [p.invoker for p in found] == ["invoker0/0", "invoker1/1"]
    assert [p.state for p in found] == [DOWN, UP]
    second = found[1]
    assert (second.capacityMB, second.freeMB, second.warm, second.inFlight, second.completed) == (
        2048,
        1792,
        2,
        1,
        17,
    )
    assert second.families == ["python", "nodejs"] and second.lastSeen == NOW - 200
    # The listing needs a key, but still tells no host names or process ids.
    assert all("host" not in repr(p) and "4242" not in repr(p) for p in found)


def test_no_heartbeats_no_pools() -> None:
    assert pools([], NOW) == []
