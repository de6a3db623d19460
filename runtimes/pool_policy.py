"""The container pool's decisions, as pure functions: which container serves a run, what to evict, when to reap."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping

import msgspec

from broker.errors import BadRequest


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    """What a decision needs to know about one container of the pool."""

    id: str
    family: str  # runtime image family: "python", "nodejs"
    memory_mb: int
    key: str | None = None  # the pool key of the action it was initialized with; None for a stem cell
    busy: bool = False  # starting, initializing or running: not available, not evictable
    # Monotonic seconds: for an idle container the end of its last run (its creation for a stem cell); for a
    # busy one, when its current run claimed it.
    last_used: float = 0.0
    network: bool = False  # created with network egress (stem cells never are)


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """The container a run needs."""

    key: str
    family: str
    memory_mb: int
    network: bool = False


class Reuse(msgspec.Struct, frozen=True, kw_only=True):
    """Run in this idle container: a warm one of the same action, or a stem cell to initialize (`warm` False)."""

    id: str
    warm: bool


class Create(msgspec.Struct, frozen=True, kw_only=True):
    """Start a new container, after removing the idle containers in `evict` (least recently used first)."""

    evict: tuple[str, ...] = ()


class Wait(msgspec.Struct, frozen=True, kw_only=True):
    """No capacity now: queue the run until a container is released or removed."""


class Refuse(msgspec.Struct, frozen=True, kw_only=True):
    """The run can never fit in this pool."""

    reason: str


Decision = Reuse | Create | Wait | Refuse

# A container used this recently is not evicted for an action that has runs of its own that started this
# recently: see `choose`.
HOT_S = 1.0


def used_mb(slots: Iterable[Slot]) -> int:
    return sum(slot.memory_mb for slot in slots)


def choose(slots: Collection[Slot], want: Want, budget_mb: int, now: float | None = None) -> Decision:
    """OpenWhisk's scheduling order (§6.2): a warm idle container of the same action; else an idle stem cell of
    the same family and memory; else a new container if the memory budget allows; else a new one after
    evicting idle containers, least recently used first; else wait.

    One exception (given `now`), against thrashing when two actions share a full pool: a run whose action has
    runs that started within HOT_S waits for one of those containers rather than evict a container that was
    used within HOT_S. With short runs that wait is milliseconds; the eviction would cost a cold start now and
    another when the evicted action comes back a moment later."""
    if want.memory_mb > budget_mb:
        return Refuse(
            reason=f"the action needs {want.memory_mb} MB and the pool's whole budget is {budget_mb} MB"
        )
    idle = [slot for slot in slots if not slot.busy]
    warm = [slot for slot in idle if slot.key == want.key]
    if warm:
        # The most recently used: the others are then the first to reach the idle timeout.
        return Reuse(id=max(warm, key=lambda s: s.last_used).id, warm=True)
    stems = [
        s
        for s in idle
        if s.key is None and s.family == want.family and s.memory_mb == want.memory_mb and not want.network
    ]
    if stems:
        return Reuse(id=min(stems, key=lambda s: s.last_used).id, warm=False)
    free = budget_mb - used_mb(slots)
    if want.memory_mb <= free:
        return Create()
    evict = eviction_order(idle)
    chosen: list[str] = []
    for slot in evict:
        chosen.append(slot.id)
        free += slot.memory_mb
        if want.memory_mb <= free:
            if now is not None and _thrashes(slots, want, slot, now):
                return Wait()
            return Create(evict=tuple(chosen))
    return Wait()


def _thrashes(slots: Collection[Slot], want: Want, newest_victim: Slot, now: float) -> bool:
    own_fresh_runs = any(s.busy and s.key == want.key and now - s.last_used < HOT_S for s in slots)
    return own_fresh_runs and now - newest_victim.last_used < HOT_S


def eviction_order(idle: Iterable[Slot]) -> list[Slot]:
    """Idle warm containers least recently used first, then stem cells (oldest first): a stem cell may serve any
    future action of its family, a warm container only its own action."""
    return sorted(idle, key=lambda s: (s.key is None, s.last_used))


def reapable(slots: Iterable[Slot], now: float, idle_timeout_s: float) -> list[str]:
    """Warm containers idle for at least `idle_timeout_s`. Stem cells are kept: they are the prewarm target."""
    return [s.id for s in slots if not s.busy and s.key is not None and now - s.last_used >= idle_timeout_s]


def reap_interval(idle_timeout_s: float) -> float:
    """How often to look for idle containers: often enough that none outlives the timeout by more than half."""
    return min(max(idle_timeout_s / 2, 0.05), 30.0)


class StemPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Stem cells to start now (one family per cell), after removing the idle warm containers in `evict`."""

    start: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()


def plan_stems(
    slots: Collection[Slot], targets: Mapping[str, int], memory_mb: int, budget_mb: int, queued: int
) -> StemPlan:
    """The stem cells missing from the prewarm targets, round-robin over the families (a small budget gets one of
    each kind before two of one). They count in the memory budget, and idle warm containers are evicted for them
    (least recently used first): like OpenWhisk's prewarm pool, the targets hold whatever the load. Nothing while
    runs are queued: those need the memory now."""
    if queued:
        return StemPlan()
    free = budget_mb - used_mb(slots)
    have = {family: 0 for family in targets}
    for slot in slots:
        if slot.key is None and slot.family in have and slot.memory_mb == memory_mb:
            have[slot.family] += 1
    evictable = [s for s in eviction_order(s for s in slots if not s.busy) if s.key is not None]
    starts: list[str] = []
    evict: list[str] = []
    while True:
        progressed = False
        for family, target in targets.items():
            if have[family] >= target:
                continue
            while free < memory_mb and evictable:
                victim = evictable.pop(0)
                evict.append(victim.id)
                free += victim.memory_mb
            if free < memory_mb:
                break
            starts.append(family)
            have[family] += 1
            free -= memory_mb
            progressed = True
        if not progressed:
            return StemPlan(start=tuple(starts), evict=tuple(evict))


def keep_after_run(status: int | None, body: bytes) -> bool:
    """Whether a container stays warm after a run. As in OpenWhisk, only a run that produced a result (success or
    application error: a 200 with a JSON object or array) keeps it; after a developer error (no reply, a non-200,
    a body that is not an object or array) the container is destroyed."""
    if status != 200:
        return False
    start = body.lstrip()[:1]
    return start in (b"{", b"[")


def parse_prewarm(spec: str) -> dict[str, int]:
    """`"python:1,nodejs:1"` -> `{"python": 1, "nodejs": 1}`; an empty string means no stem cells."""
    targets: dict[str, int] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        family, sep, count = item.partition(":")
        family = family.strip()
        if not sep or not family or not count.strip().isdigit():
            raise BadRequest(f"invalid prewarm setting {spec!r}: expected 'family:count,...'")
        targets[family] = int(count)
    return targets


def pick_uid(in_use: Collection[int], low: int, high: int, rng: random.Random) -> int:
    """A container user id in [low, high) that no live container of this pool uses. RLIMIT_NPROC is counted per
    user id, so a distinct id gives each container its own process budget (see podman_backend)."""
    span = high - low
    if span <= len(in_use):
        raise BadRequest(f"no free container user id in [{low}, {high})")
    for _ in range(64):
        uid = rng.randrange(low, high)
        if uid not in in_use:
            return uid
    return next(uid for uid in range(low, high) if uid not in in_use)
