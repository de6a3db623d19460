"""Runtime breadth, the pure parts: kinds, offered families, heartbeats that say them, the artefact cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import kinds
from broker.config import Settings
from broker.errors import BadRequest
from broker.health import Heartbeat, healthy_count, offers
from runtimes.artefact_cache import ArtefactCache, artefact_key, owner_of
from runtimes.images import RECIPES, image_tag, offered_families, recipe_digest
from runtimes.podman_backend import LOOP_FAMILIES, PROXY_COMMANDS


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("go:default", "go:1.19"),
        ("java:default", "java:17"),
        ("ruby:3", "ruby:3.1"),
        ("php:default", "php:8.2"),
        ("rust:default", "rust:1.63"),
        ("native:default", "native"),
        (" Native ", "native"),
    ],
)
def test_the_new_kinds_and_their_defaults(asked: str, stored: str) -> None:
    assert kinds.resolve_kind(asked) == stored


def test_blackbox_and_unknown_versions_keep_openwhisks_400() -> None:
    for kind in ("blackbox", "go:1.21", "java:8", "swift:5.7"):
        with pytest.raises(BadRequest, match="is not supported by this platform"):
            kinds.resolve_kind(kind)


def test_every_kind_has_an_image_recipe_and_a_proxy_command() -> None:
    for runtime in kinds.RUNTIMES:
        assert runtime.image_family in RECIPES
        assert runtime.image_family in PROXY_COMMANDS
    assert {rt.family for rt in kinds.RUNTIMES if rt.compiled} == {"go", "java", "rust"}
    assert kinds.family_of("sequence") is None and kinds.family_of("go:1.19") == "go"
    for family in LOOP_FAMILIES:  # the loop proxy is Python
        assert "python3" in RECIPES[family].packages


def test_a_baked_file_is_part_of_its_images_tag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = RECIPES["java"]
    before = recipe_digest(java)
    (tmp_path / "SquallLauncher.java").write_text("class Changed {}")
    monkeypatch.setattr("runtimes.images.LAUNCHERS_DIR", tmp_path)
    assert recipe_digest(java) != before
    assert image_tag(RECIPES["python"]).startswith("localhost/squall-python:")


def test_settings_choose_the_offered_families() -> None:
    assert offered_families(Settings()) == tuple(RECIPES)
    assert offered_families(Settings(runtimes="go, python,go")) == ("go", "python")
    with pytest.raises(BadRequest, match="unknown runtime families: cobol"):
        offered_families(Settings(runtimes="python,cobol"))


def test_an_invoke_needs_an_invoker_that_offers_the_family() -> None:
    now = 1_000_000
    go_host = Heartbeat(id="a", at=now, families=("python", "go"))
    old = Heartbeat(id="b", at=now)  # says nothing: what Squall ran before
    assert offers(go_host, "go") and not offers(go_host, "java") and offers(go_host, None)
    assert offers(old, "nodejs") and not offers(old, "go")
    assert healthy_count([go_host, old], now, "go") == 1
    assert healthy_count([go_host, old], now, "java") == 0
    assert healthy_count([go_host, old], now) == 2


def test_artefact_keys_separate_tenants_and_everything_the_compile_depends_on() -> None:
    base = artefact_key("ns", "go:1.19", "main", "code", False)
    assert base == artefact_key("ns", "go:1.19", "main", "code", False)
    others = {
        artefact_key("other", "go:1.19", "main", "code", False),
        artefact_key("ns", "rust:1.63", "main", "code", False),
        artefact_key("ns", "go:1.19", "hello", "code", False),
        artefact_key("ns", "go:1.19", "main", "code2", False),
        artefact_key("ns", "go:1.19", "main", "code", True),
        artefact_key("ns", "go:1.19", "mainc", "ode", False),  # no ambiguity where the parts meet
    }
    assert base not in others and len(others) == 6
    assert owner_of("ns/pkg/a@3#caller") == "ns"


def test_the_artefact_cache_evicts_the_least_recently_used(tmp_path: Path) -> None:
    import os

    cache = ArtefactCache(tmp_path / "c", max_bytes=250)
    cache.put("a", b"x" * 100)
    cache.put("b", b"y" * 100)
    os.utime(tmp_path / "c" / "a", (1, 1))
    os.utime(tmp_path / "c" / "b", (2, 2))
    assert cache.get("a") == b"x" * 100  # used now: b is older
    cache.put("c", b"z" * 100)
    assert cache.get("b") is None
    assert cache.get("a") == b"x" * 100 and cache.get("c") == b"z" * 100
    cache.put("huge", b"h" * 300)  # larger than the whole cache: not kept
    assert cache.get("huge") is None
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o700
