"""Pure pieces of authentication: key records, hashing, Basic header parsing, `_` resolution, error mapping."""

from __future__ import annotations

import base64

import pytest

from api.auth import Identity, credentials_of
from api.errors import status_of
from broker import errors
from broker.codec import decode, encode
from broker.config import GUEST_KEY
from broker.namespaces import AuthKey, Namespace, key_matches, make_auth_key, split_key


def test_new_keys_are_uuid_and_64_alphanumerics() -> None:
    record, plain = make_auth_key("ns")
    uuid, secret = split_key(plain)
    assert record.uuid == uuid and record.namespace == "ns"
    assert len(secret) == 64 and secret.isalnum()
    assert secret not in encode(record).decode()  # only the hash is kept


def test_imported_key_matches_and_wrong_secret_does_not() -> None:
    record, plain = make_auth_key("guest", GUEST_KEY)
    assert plain == GUEST_KEY
    assert key_matches(record, GUEST_KEY.split(":")[1])
    assert not key_matches(record, GUEST_KEY.split(":")[1] + "x")


def test_same_key_gets_a_different_salt_each_time() -> None:
    a, _ = make_auth_key("guest", GUEST_KEY)
    b, _ = make_auth_key("guest", GUEST_KEY)
    assert a.salt != b.salt and a.secret_hash != b.secret_hash


def test_import_of_a_malformed_key_is_a_bad_request() -> None:
    with pytest.raises(errors.BadRequest):
        make_auth_key("ns", "no-colon")


def test_records_round_trip_through_the_codec() -> None:
    record, _ = make_auth_key("ns")
    assert decode(encode(record), AuthKey) == record
    ns = Namespace(name="ns", created=1)
    assert decode(encode(ns), Namespace) == ns
    assert b"invocationsPerMinute" not in encode(ns)  # unset limits are omitted


def test_basic_header_parsing() -> None:
    header = "Basic " + base64.b64encode(GUEST_KEY.encode()).decode()
    assert credentials_of(header) == tuple(GUEST_KEY.split(":", 1))
    for bad in (None, "", "Basic", "Bearer x", "Basic %%%", "Basic " + base64.b64encode(b"nocolon").decode()):
        with pytest.raises(errors.Unauthorized):
            credentials_of(bad)


def test_underscore_is_the_callers_namespace_and_others_are_forbidden() -> None:
    me = Identity(namespace="alice", uuid="u")
    assert me.resolve("_") == "alice"
    assert me.resolve("alice") == "alice"
    with pytest.raises(errors.Forbidden):
        me.resolve("bob")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.BadRequest(), 400),
        (errors.Unauthorized(), 401),
        (errors.Forbidden(), 403),
        (errors.NotFound(), 404),
        (errors.Conflict(), 409),
        (errors.ConcurrentModification(), 409),
        (errors.PayloadTooLarge(), 413),
        (errors.Throttled(), 429),
        (errors.InternalError(), 500),
        (errors.Unavailable(), 503),
    ],
)
def test_error_hierarchy_maps_to_openwhisk_statuses(error: errors.SquallError, status: int) -> None:
    assert status_of(error) == status


def test_openwhisk_messages_are_the_defaults() -> None:
    assert errors.ConcurrentModification().message == "Concurrent modification to resource detected."
    assert errors.NotFound().message == "The requested resource does not exist."
    assert errors.Conflict().message == "resource already exists"
