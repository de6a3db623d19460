"""Subject and key escaping: reversible, injective, and always a single valid NATS token."""

from __future__ import annotations

import re

import pytest

from broker import subjects

_TOKEN_CHARS = re.compile(r"\A[A-Za-z0-9_=-]+\Z")

NAMES = [
    "a",
    "hello_world-1",
    "my action",
    "a.b",
    "a@b&c",
    "pkg/action",
    "=",
    "=3D",
    "ünïcode",
    "日本",
    "a b" * 100,
    "*",
    ">",
]


@pytest.mark.parametrize("name", NAMES)
def test_token_round_trips(name: str) -> None:
    assert subjects.untoken(subjects.token(name)) == name


@pytest.mark.parametrize("name", NAMES)
def test_token_is_one_subject_token_of_allowed_chars(name: str) -> None:
    tok = subjects.token(name)
    assert _TOKEN_CHARS.match(tok), tok
    assert "." not in tok
    assert " " not in tok


def test_plain_names_are_left_readable() -> None:
    assert subjects.token("hello_World-9") == "hello_World-9"


def test_token_is_injective() -> None:
    # The escape character itself must be escaped, or "=2E" and "." would collide.
    names = [*NAMES, "=2E", ".", "=2F", "/", "a=20b", "a b"]
    tokens = [subjects.token(n) for n in names]
    assert len(set(tokens)) == len(set(names))


def test_subject_builders_keep_one_token_per_part() -> None:
    assert subjects.trigger_subject("ns", "my.trigger") == "trigger.ns.my=2Etrigger"
    assert subjects.invoke_subject("ns", "own/pkg/a").split(".") == ["invoke", "ns", "own=2Fpkg=2Fa"]
    assert subjects.invoke_filter("guest") == "invoke.guest.>"
    assert subjects.invoke_filter("a.b c") == "invoke.a=2Eb=20c.>"
    assert subjects.activation_subject("a b", "c").split(".") == ["activation", "a=20b", "c"]
    assert subjects.deadletter_subject("a b", "0f" * 16).split(".") == ["deadletter", "a=20b", "0f" * 16]
    assert subjects.deadletter_subject("a b") == "deadletter.a=20b.*"  # every letter of the namespace
    assert subjects.entity_key("ns", "pkg/a") == "ns.pkg=2Fa"
    assert subjects.namespace_prefix("my ns") == "my=20ns.>"
