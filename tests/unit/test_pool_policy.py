"""The container pool's pure decisions: reuse, stem cells, capacity, eviction, reaping, prewarm targets."""

from __future__ import annotations

import random

import pytest

from broker.errors import BadRequest
from runtimes.pool_policy import (
    Create,
    Refuse,
    Reuse,
    Slot,
    StemPlan,
    Wait,
    Want,
    choose,
    eviction_order,
    keep_after_run,
    parse_prewarm,
    pick_uid,
    plan_stems,
    reap_interval,
    reapable,
    used_mb,
)

A = Want(key="ns/a@1", family="python", memory_mb=256)


def warm(
    id: str, key: str = "ns/a@1", *, busy: bool = False, last_used: float = 0.0, memory: int = 256
) -> Slot:
    return Slot(id=id, family="python", memory_mb=memory, key=key, busy=busy, last_used=last_used)


def stem(
    id: str, family: str = "python", *, memory: int = 256, busy: bool = False, last_used: float = 0.0
) -> Slot:
    return Slot(id=id, family=family, memory_mb=memory, busy=busy, last_used=last_used)


def test_an_empty_pool_creates() -> None:
    assert choose([], A, 2048) == Create()


def test_a_warm_idle_container_of_the_same_action_wins_over_a_stem_cell() -> None:
    slots = [stem("s"), warm("w", last_used=5.0)]
    assert choose(slots, A, 2048) == Reuse(id="w", warm=True)


def test_the_most_recently_used_warm_container_is_reused() -> None:
    slots = [warm("old", last_used=1.0), warm("new", last_used=9.0), warm("mid", last_used=5.0)]
    assert choose(slots, A, 2048) == Reuse(id="new", warm=True)


def test_a_busy_warm_container_is_not_reused() -> None:
    assert choose([warm("w", busy=True)], A, 2048) == Create()


def test_another_actions_warm_container_is_not_reused() -> None:
    assert choose([warm("w", key="ns/b@1")], A, 2048) == Create()


def test_a_new_revision_does_not_reuse_the_old_one() -> None:
    assert (
        choose([warm("w", key="ns/a@1")], Want(key="ns/a@2", family="python", memory_mb=256), 2048)
        == Create()
    )


def test_a_stem_cell_of_the_same_family_and_memory_is_used_oldest_first() -> None:
    slots = [stem("young", last_used=8.0), stem("old", last_used=2.0)]
    assert choose(slots, A, 2048) == Reuse(id="old", warm=False)


@pytest.mark.parametrize(
    "candidate",
    [stem("node", family="nodejs"), stem("big", memory=512), stem("busy", busy=True)],
    ids=["other family", "other memory", "busy"],
)
def test_a_stem_cell_that_does_not_match_is_not_used(candidate: Slot) -> None:
    assert choose([candidate], A, 2048) == Create()


def test_a_run_with_network_never_takes_a_stem_cell() -> None:
    want = Want(key="ns/a@1", family="python", memory_mb=256, network=True)
    assert choose([stem("s")], want, 2048) == Create()


def test_capacity_counts_busy_and_idle_containers() -> None:
    slots = [warm("w1", key="x", busy=True), warm("w2", key="y", busy=True)]
    assert choose(slots, A, 768) == Create()
    assert choose(slots, A, 767) == Wait()


def test_when_full_the_least_recently_used_idle_container_is_evicted() -> None:
    slots = [
        warm("busy", key="x", busy=True),
        warm("recent", key="y", last_used=9.0),
        warm("lru", key="z", last_used=1.0),
    ]
    assert choose(slots, A, 768) == Create(evict=("lru",))


def test_eviction_takes_as_many_as_needed_and_no_more() -> None:
    slots = [warm(f"w{i}", key=f"k{i}", last_used=float(i), memory=128) for i in range(4)]
    assert choose(slots, A, 512) == Create(evict=("w0", "w1"))


def test_warm_containers_are_evicted_before_stem_cells() -> None:
    slots = [stem("s", family="nodejs", last_used=0.0), warm("w", key="z", last_used=50.0)]
    assert choose(slots, A, 512) == Create(evict=("w",))
    assert [s.id for s in eviction_order(slots)] == ["w", "s"]


def test_when_only_busy_containers_fill_the_pool_the_run_waits() -> None:
    slots = [warm("b1", key="x", busy=True), stem("b2", busy=True)]
    assert choose(slots, A, 512) == Wait()


def test_when_evicting_every_idle_container_is_not_enough_nothing_is_evicted() -> None:
    slots = [warm("busy", key="x", busy=True, memory=384), warm("idle", key="y", memory=128)]
    assert choose(slots, Want(key="k", family="python", memory_mb=256), 512) == Wait()


def test_a_run_larger_than_the_whole_budget_is_refused() -> None:
    decision = choose([], Want(key="k", family="python", memory_mb=512), 256)
    assert isinstance(decision, Refuse)
    assert "512 MB" in decision.reason


def test_used_memory_sums_every_container() -> None:
    assert used_mb([warm("a"), stem("b", memory=128), warm("c", busy=True, memory=512)]) == 896


def test_reaping_takes_idle_warm_containers_past_the_timeout_only() -> None:
    slots = [
        warm("stale", key="x", last_used=0.0),
        warm("fresh", key="y", last_used=95.0),
        warm("running", key="z", last_used=0.0, busy=True),
        stem("stem", last_used=0.0),
    ]
    assert reapable(slots, now=100.0, idle_timeout_s=10.0) == ["stale"]
    assert reapable(slots, now=100.0, idle_timeout_s=100.0) == ["stale"]
    assert reapable(slots, now=100.0, idle_timeout_s=101.0) == []


def test_reap_interval_is_half_the_timeout_within_bounds() -> None:
    assert reap_interval(600.0) == 30.0
    assert reap_interval(1.0) == 0.5
    assert reap_interval(0.01) == 0.05


def test_stem_cells_are_started_up_to_the_target_round_robin() -> None:
    targets = {"python": 2, "nodejs": 1}
    assert plan_stems([], targets, 256, 2048, queued=0) == StemPlan(start=("python", "nodejs", "python"))
    assert plan_stems([stem("p")], targets, 256, 2048, queued=0) == StemPlan(start=("python", "nodejs"))


def test_stem_cells_being_started_count_toward_the_target() -> None:
    assert plan_stems([stem("p", busy=True)], {"python": 1}, 256, 2048, queued=0) == StemPlan()


def test_stem_cells_evict_idle_warm_containers_least_recently_used_first() -> None:
    slots = [warm("old", key="x", last_used=1.0), warm("new", key="y", last_used=9.0)]
    assert plan_stems(slots, {"python": 1}, 256, 512, queued=0) == StemPlan(start=("python",), evict=("old",))


def test_stem_cells_never_evict_busy_containers_or_other_stem_cells() -> None:
    slots = [warm("busy", key="x", busy=True), stem("node", family="nodejs")]
    assert plan_stems(slots, {"python": 1, "nodejs": 1}, 256, 512, queued=0) == StemPlan()


def test_stem_cells_stop_where_eviction_cannot_make_room() -> None:
    slots = [warm("busy", key="x", busy=True, memory=1792), warm("idle", key="y", memory=256)]
    plan = plan_stems(slots, {"python": 2, "nodejs": 2}, 256, 2048, queued=0)
    assert plan == StemPlan(start=("python",), evict=("idle",))


def test_no_stem_cell_is_started_while_runs_are_queued() -> None:
    assert plan_stems([], {"python": 1}, 256, 2048, queued=1) == StemPlan()


def test_a_stem_cell_of_another_memory_does_not_count() -> None:
    assert plan_stems([stem("p", memory=128)], {"python": 1}, 256, 2048, queued=0) == StemPlan(
        start=("python",)
    )


@pytest.mark.parametrize(
    ("status", "body", "keep"),
    [
        (200, b'{"ok":true}', True),
        (200, b'{"error":"application error keeps the container"}', True),
        (200, b"[1,2]", True),
        (200, b'  {"leading":"space"}', True),
        (200, b'"a string"', False),
        (200, b"", False),
        (502, b'{"error":"developer error"}', False),
        (None, b"", False),
    ],
)
def test_only_a_run_with_a_result_keeps_its_container(status: int | None, body: bytes, keep: bool) -> None:
    assert keep_after_run(status, body) is keep


def test_prewarm_spec_is_parsed() -> None:
    assert parse_prewarm("python:1,nodejs:2") == {"python": 1, "nodejs": 2}
    assert parse_prewarm(" python : 3 , ") == {"python": 3}
    assert parse_prewarm("") == {}


@pytest.mark.parametrize("spec", ["python", "python:x", ":1", "python:-1"])
def test_a_bad_prewarm_spec_is_refused(spec: str) -> None:
    with pytest.raises(BadRequest, match="prewarm"):
        parse_prewarm(spec)


def test_container_uids_are_distinct_and_in_range() -> None:
    rng = random.Random(7)
    taken: set[int] = set()
    for _ in range(50):
        uid = pick_uid(taken, 100, 150, rng)
        assert 100 <= uid < 150
        assert uid not in taken
        taken.add(uid)
    with pytest.raises(BadRequest):
        pick_uid(taken, 100, 150, rng)


def test_a_run_waits_for_its_own_fresh_runs_rather_than_evict_a_container_just_used() -> None:
    # A full pool: the action's own runs started a moment ago, another action's container idles since 0.2 s.
    slots = [warm(f"a{i}", busy=True, last_used=99.9) for i in range(3)] + [
        warm("b", key="ns/b@1", last_used=99.8)
    ]
    assert choose(slots, A, 1024, now=100.0) == Wait()
    # Long runs of its own (started over HOT_S ago), or a container idle for longer: evicting is right.
    long_runs = [warm(f"a{i}", busy=True, last_used=90.0) for i in range(3)] + [
        warm("b", key="ns/b@1", last_used=99.8)
    ]
    assert choose(long_runs, A, 1024, now=100.0) == Create(evict=("b",))
    cold_victim = [*slots[:3], warm("b", key="ns/b@1", last_used=95.0)]
    assert choose(cold_victim, A, 1024, now=100.0) == Create(evict=("b",))
    # A new action (no runs of its own) evicts as before, and without `now` nothing changes.
    assert choose(slots, Want(key="ns/c@1", family="python", memory_mb=256), 1024, now=100.0) == Create(
        evict=("b",)
    )
    assert choose(slots, A, 1024) == Create(evict=("b",))
