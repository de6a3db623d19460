"""The activation store's pure parts: the list queries, which index serves them, and index migration."""

from __future__ import annotations

from broker.activation_store import BY_NAMESPACE, BY_PATH, list_filter, list_index, superseded_indexes


def test_list_filters_compare_with_eq_so_an_index_serves_them() -> None:
    assert list_filter("guest") == {"namespace": {"$eq": "guest"}}
    assert list_filter("guest", name="pkg/a", since=5, upto=9) == {
        "namespace": {"$eq": "guest"},
        "entityPath": {"$eq": "pkg/a"},
        "start": {"$gte": 5, "$lte": 9},
    }
    assert list_filter("guest", since=0) == {"namespace": {"$eq": "guest"}, "start": {"$gte": 0}}


def test_the_index_for_a_query_has_its_equalities_first_then_the_order() -> None:
    assert list_index(None) == BY_NAMESPACE
    assert list_index("") == BY_NAMESPACE
    assert list_index("pkg/a") == BY_PATH
    for index in (BY_NAMESPACE, BY_PATH):
        assert [field for field, _ in index[-2:]] == ["start", "activationId"]


def test_superseded_indexes_are_the_old_list_indexes_only() -> None:
    info = {
        "_id_": {"key": [("_id", 1)]},
        "activationId": {"key": [("activationId", 1)], "unique": True},
        # nx-27017 names indexes itself and reports every direction as 1
        "idx_activations_namespace_start": {"key": [("namespace", 1), ("start", 1)]},
        "ns_path_start": {"key": [("namespace", 1), ("entityPath", 1), ("start", -1)]},
        "ns_start_id": {"key": BY_NAMESPACE},
        "someone_elses": {"key": [("name", 1)]},
    }
    assert superseded_indexes(info) == ["idx_activations_namespace_start", "ns_path_start"]
