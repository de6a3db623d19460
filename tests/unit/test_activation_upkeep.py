"""The upkeep's decisions: each namespace's retention, the cutoff it means, and fair turns between namespaces."""

from __future__ import annotations

from broker.activation_upkeep import DAY_MS, retention_cutoff, retention_days, rotated
from broker.namespaces import NamespaceLimits


def test_a_namespace_keeps_its_own_retention_else_the_systems() -> None:
    assert retention_days(NamespaceLimits(), 7) == 7
    assert retention_days(NamespaceLimits(activationRetentionDays=30), 7) == 30
    assert retention_days(NamespaceLimits(activationRetentionDays=1, firesPerMinute=5), 7) == 1


def test_the_cutoff_is_whole_days_before_now() -> None:
    assert retention_cutoff(10 * DAY_MS + 5, 3) == 7 * DAY_MS + 5
    assert retention_cutoff(10 * DAY_MS, 0) == 10 * DAY_MS


def test_a_sweep_that_ran_out_of_budget_resumes_with_the_namespaces_after() -> None:
    names = ["a", "b", "c", "d"]
    assert rotated(names, None) == names
    assert rotated(names, "b") == ["c", "d", "a", "b"]
    assert rotated(names, "d") == names
    assert rotated(names, "bb") == ["c", "d", "a", "b"]  # it may be gone since
