"""The decisions behind exact activation counts: which deltas a batch writes, what a pending one settles to,
what a reader adds up and what a fold takes in."""

from __future__ import annotations

from broker.activation_counts import (
    CountDelta,
    CountTotal,
    count_of,
    fold_plan,
    key_of,
    pending_deltas,
    settled_n,
)


def delta(id: str, key: str, n: int, *, pending: bool = False) -> CountDelta:
    namespace, _, path = key.partition("|")
    return CountDelta(id=id, key=key, namespace=namespace, path=path, change=id, sign=1, n=n, pending=pending)


def test_a_batch_writes_one_delta_per_namespace_and_per_entity_path() -> None:
    records = [
        ("a1", "guest", "hello", "B"),
        ("a2", "guest", "pkg/hello", "B"),
        ("a3", "other", "hello", "B"),
    ]
    deltas = {d.key: d for d in pending_deltas("B", 1, records, at=5)}
    assert set(deltas) == {"guest|", "guest|hello", "guest|pkg/hello", "other|", "other|hello"}
    assert deltas["guest|"].ids == ["a1", "a2"]
    assert deltas["guest|"].n == 2
    assert deltas["guest|pkg/hello"].ids == ["a2"]
    assert deltas["guest|"].id == "B|guest|"
    assert all(
        d.pending and d.sign == 1 and d.change == "B" and d.at == 5 and d.batches == []
        for d in deltas.values()
    )


def test_a_record_named_twice_in_one_batch_is_counted_once() -> None:
    deltas = pending_deltas("B", 1, [("a1", "guest", "x", "B"), ("a1", "guest", "x", "B")], at=0)
    assert [(d.key, d.n, d.ids) for d in deltas] == [("guest|", 1, ["a1"]), ("guest|x", 1, ["a1"])]


def test_a_sweep_writes_negative_deltas_that_remember_each_records_batch() -> None:
    deltas = {
        d.key: d for d in pending_deltas("S", -1, [("a1", "g", "x", "B1"), ("a2", "g", "y", None)], at=0)
    }
    assert deltas["g|"].n == -2
    assert list(zip(deltas["g|"].ids, deltas["g|"].batches, strict=True)) == [("a1", "B1"), ("a2", None)]


def test_a_pending_write_settles_to_the_records_its_own_batch_stored() -> None:
    (ns_delta, _) = pending_deltas(
        "B", 1, [("a1", "g", "x", "B"), ("a2", "g", "x", "B"), ("a3", "g", "x", "B")], 0
    )
    # a1 stored by this batch; a2 an earlier copy (a redelivery: another batch stored it); a3 never stored
    present = {("a1", "B"), ("a2", "EARLIER")}
    assert settled_n(ns_delta, present) == 1


def test_a_pending_sweep_settles_to_minus_the_records_gone() -> None:
    (ns_delta, *_) = pending_deltas(
        "S", -1, [("a1", "g", "x", "B1"), ("a2", "g", "x", "B1"), ("a3", "g", "x", None)], 0
    )
    # a1 still there (the sweep died before deleting it); a2 gone; a3 deleted, then stored again by a later batch
    present = {("a1", "B1"), ("a3", "LATER")}
    assert settled_n(ns_delta, present) == -2


def test_a_count_is_the_total_plus_settled_deltas_no_fold_took_in() -> None:
    total = CountTotal(id="g|", n=100, gen=3, folded=["d1"])
    deltas = [
        delta("d1", "g|", 5),
        delta("d2", "g|", 7),
        delta("d3", "g|", -2),
        delta("d4", "g|", 9, pending=True),
    ]
    assert count_of(total, deltas) == 105  # d1 is in the total already; d4 is not settled
    assert count_of(None, deltas) == 10
    assert count_of(None, []) == 0


def test_a_fold_deletes_what_the_last_one_took_in_and_takes_in_the_rest() -> None:
    total = CountTotal(id="g|", n=100, gen=3, folded=["d1"])
    plan = fold_plan(total, [delta("d1", "g|", 5), delta("d2", "g|", 7), delta("d3", "g|", -2)])
    assert (plan.leftovers, plan.fold, plan.increment) == (["d1"], ["d2", "d3"], 5)
    assert fold_plan(None, []).fold == []


def test_keys_keep_namespace_and_path_apart() -> None:
    assert key_of("guest") == "guest|"
    assert key_of("guest", "pkg/a") == "guest|pkg/a"
    assert key_of("guest/pkg", "a") != key_of("guest", "pkg/a")
