"""The decisions behind exact activation counts: which deltas a batch writes, what a pending one settles to,
what a reader adds up and what a fold takes in."""

from __future__ import annotations

from broker.activation_counts import (
    CountDelta,
    CountTotal,
    count_of,
    done_paths,
    fold_plan,
    pending_deltas,
    settled_paths,
    tally,
)


def delta(id: str, paths: list[tuple[str, int]], *, pending: bool = False) -> CountDelta:
    return CountDelta(id=id, namespace="g", change=id, sign=1, paths=paths, pending=pending)


def test_a_batch_writes_one_delta_per_namespace_with_a_count_per_path() -> None:
    records = [
        ("a1", "guest", "hello", "B"),
        ("a2", "guest", "pkg/hello", "B"),
        ("a3", "other", "hello", "B"),
    ]
    deltas = {d.namespace: d for d in pending_deltas("B", 1, records, at=5)}
    assert set(deltas) == {"guest", "other"}
    guest = deltas["guest"]
    assert (guest.id, guest.change, guest.sign, guest.pending, guest.at) == ("B|guest", "B", 1, True, 5)
    assert guest.paths == [("hello", 1), ("pkg/hello", 1)]
    assert (guest.ids, guest.id_paths, guest.batches) == (["a1", "a2"], ["hello", "pkg/hello"], [])
    assert deltas["other"].paths == [("hello", 1)]


def test_a_record_named_twice_in_one_batch_is_counted_once() -> None:
    (only,) = pending_deltas("B", 1, [("a1", "guest", "x", "B"), ("a1", "guest", "x", "B")], at=0)
    assert (only.paths, only.ids) == ([("x", 1)], ["a1"])


def test_a_sweep_writes_negative_deltas_that_remember_each_records_batch() -> None:
    (only,) = pending_deltas(
        "S", -1, [("a1", "g", "x", "B1"), ("a2", "g", "y", None), ("a3", "g", "x", "B2")], at=0
    )
    assert only.paths == [("x", -2), ("y", -1)]
    assert list(zip(only.ids, only.batches, strict=True)) == [("a1", "B1"), ("a2", None), ("a3", "B2")]


def test_what_a_writer_did_is_counted_per_path() -> None:
    (only,) = pending_deltas(
        "B", 1, [("a1", "g", "x", "B"), ("a2", "g", "y", "B"), ("a3", "g", "x", "B")], at=0
    )
    assert done_paths(only, lambda record_id: record_id != "a3") == [("x", 1), ("y", 1)]
    assert done_paths(only, lambda record_id: False) == []
    assert tally(["b", "a", "b"], -1) == [("a", -1), ("b", -2)]


def test_a_pending_write_settles_to_the_records_its_own_batch_stored() -> None:
    (only,) = pending_deltas("B", 1, [("a1", "g", "x", "B"), ("a2", "g", "x", "B"), ("a3", "g", "y", "B")], 0)
    # a1 stored by this batch; a2 an earlier copy (a redelivery: another batch stored it); a3 never stored
    assert settled_paths(only, {("a1", "B"), ("a2", "EARLIER")}) == [("x", 1)]


def test_a_pending_sweep_settles_to_minus_the_records_gone() -> None:
    named = [("a1", "g", "x", "B1"), ("a2", "g", "x", "B1"), ("a3", "g", "y", None)]
    (only,) = pending_deltas("S", -1, named, 0)
    # a1 still there (the sweep died before deleting it); a2 gone; a3 deleted, then stored again by a later batch
    assert settled_paths(only, {("a1", "B1"), ("a3", "LATER")}) == [("x", -1), ("y", -1)]


def test_a_count_is_the_total_plus_settled_deltas_no_fold_took_in() -> None:
    total = CountTotal(id="g", paths=[("a", 60), ("b", 40)], gen=3, folded=["d1"])
    deltas = [
        delta("d1", [("a", 5)]),  # in the total already
        delta("d2", [("a", 7), ("c", 1)]),
        delta("d3", [("b", -2)]),
        delta("d4", [("a", 9)], pending=True),  # not settled
    ]
    assert count_of(total, deltas) == 106
    assert (count_of(total, deltas, "a"), count_of(total, deltas, "b"), count_of(total, deltas, "c")) == (
        67,
        38,
        1,
    )
    assert count_of(total, deltas, "zz") == 0
    assert count_of(None, deltas) == 11  # without a total, d1 is not taken in yet
    assert count_of(None, []) == 0


def test_a_fold_deletes_what_the_last_one_took_in_and_takes_in_the_rest() -> None:
    total = CountTotal(id="g", paths=[("a", 60), ("b", 2)], gen=3, folded=["d1"])
    plan = fold_plan(
        total, [delta("d1", [("a", 5)]), delta("d2", [("a", 7), ("c", 1)]), delta("d3", [("b", -2)])]
    )
    assert (plan.leftovers, plan.fold) == (["d1"], ["d2", "d3"])
    assert plan.paths == [("a", 67), ("c", 1)]  # "b" has no records left
    assert fold_plan(None, []).fold == []
