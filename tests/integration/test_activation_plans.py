"""Every activation read is served by an index on the embedded store, whatever the collection's size.

nx-27017 answers the wire protocol with neosqlite, which compiles each query to one SQL statement. These tests
run the store's own query documents through neosqlite in-process, catch the SQL it compiles, and read
SQLite's plan for it: an index search, never a scan of the table, and no sort step for the newest-first order.
A plan does not change with the number of rows, so a few hundred records stand for a million (bench/history.py
measures the million).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import neosqlite
import pytest

from broker import activation_store as store
from broker.activation_store import RECORD, list_filter, list_index, to_document
from broker.subjects import ACTIVATION_COUNT_DELTAS_COLLECTION, ACTIVATION_COUNTS_COLLECTION
from tests.integration.test_activation_store import NOW, record

_NEWEST_FIRST = [("start", -1), ("activationId", -1)]


class Traced:
    """A neosqlite collection set up as ActivationStore.provision sets up the real one, whose SQL is caught."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.collection = conn["activations"]
        self.statements: list[str] = []
        conn.db.set_trace_callback(self.statements.append)

    def plan_of(self, run: Any, table: str = "activations") -> list[str]:
        """SQLite's plan (EXPLAIN QUERY PLAN details) of the last SELECT on `table` that `run` made."""
        self.statements.clear()
        run()
        selects = [s for s in self.statements if s.lstrip().upper().startswith("SELECT") and table in s]
        assert selects, f"no SELECT on {table} among {self.statements}"
        db: sqlite3.Connection = self.conn.db
        return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + selects[-1])]


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    conn = neosqlite.Connection(":memory:")
    collection = conn["activations"]
    collection.create_index([("activationId", 1)], unique=True)
    collection.create_index(store.BY_NAMESPACE)
    collection.create_index(store.BY_PATH)
    docs = [to_document(record(NOW + i, name=f"a{i % 5}", namespace=f"ns{i % 3}")) for i in range(300)]
    collection.insert_many(docs)
    yield Traced(conn)
    conn.close()


def served_by_index(plan: list[str], *, ordered: bool = True) -> None:
    assert any(step.startswith("SEARCH") and "USING" in step and "INDEX" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan
    if ordered:
        assert not any("TEMP B-TREE" in step for step in plan), plan


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"name": "a1"},
        {"name": "pkg/a1"},
        {"since": NOW + 10},
        {"upto": NOW + 10},
        {"since": NOW + 10, "upto": NOW + 200},
        {"name": "a1", "since": NOW + 10, "upto": NOW + 200},
    ],
)
def test_list_pages_come_out_of_an_index_in_order(traced: Traced, filters: dict[str, Any]) -> None:
    query = list_filter("ns1", **filters)
    projection = {"_id": 0, RECORD: 1, "activationId": 1}

    def page() -> None:
        list(traced.collection.find(query, projection).sort(_NEWEST_FIRST).skip(30).limit(30))

    served_by_index(traced.plan_of(page))
    assert list_index(filters.get("name")) in (store.BY_NAMESPACE, store.BY_PATH)


def test_get_by_id_is_an_index_search(traced: Traced) -> None:
    one = traced.collection.find_one({})
    query = {"activationId": store.eq(one["activationId"]), "namespace": store.eq(one["namespace"])}
    served_by_index(traced.plan_of(lambda: traced.collection.find_one(query, {"_id": 0, RECORD: 1})))


@pytest.mark.parametrize("filters", [{"since": NOW + 10}, {"name": "a1", "upto": NOW + 100}])
def test_counts_of_a_window_are_index_range_counts(traced: Traced, filters: dict[str, Any]) -> None:
    query = list_filter("ns1", **filters)
    plan = traced.plan_of(lambda: traced.collection.count_documents(query))
    served_by_index(plan, ordered=False)


def test_a_bare_equality_would_scan(traced: Traced) -> None:
    """Why the store writes `$eq`: the bare form compiles to an OR with array containment, a full scan."""
    plan = traced.plan_of(
        lambda: list(traced.collection.find({"namespace": "ns1"}).sort(_NEWEST_FIRST).limit(30))
    )
    assert any(step.startswith("SCAN") for step in plan), plan


def test_the_sweeps_queries_are_index_searches(traced: Traced) -> None:
    # The oldest records of a namespace before a cutoff, oldest first (ActivationStore.oldest).
    query = {"namespace": store.eq("ns1"), "start": {"$lt": NOW + 100}}
    oldest = traced.plan_of(
        lambda: list(
            traced.collection.find(query, {"_id": 1, "entityPath": 1})
            .sort([("start", 1), ("activationId", 1)])
            .limit(500)
        )
    )
    served_by_index(oldest)
    # The next namespace after one (ActivationStore.namespaces steps through them).
    step = traced.plan_of(
        lambda: list(traced.collection.find({"namespace": {"$gt": "ns0"}}).sort([("namespace", 1)]).limit(1))
    )
    served_by_index(step)
    # Many records by `_id` at once (what the sweep deletes by).
    ids = [doc["_id"] for doc in traced.collection.find({}).limit(5)]
    served_by_index(
        traced.plan_of(lambda: list(traced.collection.find({"_id": {"$in": ids}}))), ordered=False
    )


def test_the_counts_reads_are_index_searches(traced: Traced) -> None:
    # The oldest and newest record of a list, which tell whether a window holds them all.
    for order in (1, -1):
        for name in (None, "a1"):
            query = list_filter("ns1", name=name)
            sort = [("start", order), ("activationId", order)]
            plan = traced.plan_of(lambda q=query, o=sort: list(traced.collection.find(q).sort(o).limit(1)))
            served_by_index(plan)
    # A namespace's total (by `_id`) and its deltas not yet folded (by `namespace`).
    deltas = traced.conn[ACTIVATION_COUNT_DELTAS_COLLECTION]
    deltas.create_index([("namespace", 1)])
    deltas.insert_many(
        [{"_id": f"b{i}|ns{i % 3}", "namespace": f"ns{i % 3}", "paths": [["a", 1]]} for i in range(30)]
    )
    totals = traced.conn[ACTIVATION_COUNTS_COLLECTION]
    totals.insert_many([{"_id": f"ns{i}", "paths": [["a", i]]} for i in range(3)])
    for collection, query in ((deltas, {"namespace": store.eq("ns1")}), (totals, {"_id": "ns1"})):
        plan = traced.plan_of(lambda c=collection, q=query: list(c.find(q)), table=collection.name)
        served_by_index(plan, ordered=False)
