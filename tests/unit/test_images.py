"""Runtime image recipes: tag stability and the host's Debian mirror, parsed from sample apt sources."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from broker.errors import Unavailable
from runtimes import images
from runtimes.images import (
    RECIPES,
    AptSource,
    DebianMirror,
    ImageRecipe,
    image_tag,
    parse_deb822_sources,
    parse_one_line_sources,
    pick_debian_mirror,
    read_debian_mirror,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

DEB822_WITH_NOISE = """\
Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

types: deb deb-src
uris: https://a.example/debian https://b.example/debian
suites: trixie
components: main
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGBnZxIBEAC
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian bookworm main contrib
deb http://security.debian.org/debian-security bookworm-security main
deb [ trusted=yes ] http://spaced.example/debian bookworm-backports main  # trailing comment
deb http://old.example/debian-security buster/updates main
"""


def test_deb822_keeps_binary_enabled_entries() -> None:
    assert parse_deb822_sources(DEB822) == [
        AptSource(uri="http://mirror.example/debian", suites=("bookworm", "bookworm-updates")),
        AptSource(uri="http://mirror.example/debian-security", suites=("bookworm-security",)),
    ]
    assert parse_deb822_sources(DEB822_WITH_NOISE) == [
        AptSource(uri="https://a.example/debian", suites=("trixie",)),
        AptSource(uri="https://b.example/debian", suites=("trixie",)),
    ]


def test_one_line_format_skips_comments_sources_and_options() -> None:
    assert parse_one_line_sources(ONE_LINE) == [
        AptSource(uri="http://mirror.example/debian", suites=("bookworm",)),
        AptSource(uri="http://security.debian.org/debian-security", suites=("bookworm-security",)),
        AptSource(uri="http://spaced.example/debian", suites=("bookworm-backports",)),
        AptSource(uri="http://old.example/debian-security", suites=("buster/updates",)),
    ]


def test_main_archive_is_picked_not_security_or_updates() -> None:
    expected = DebianMirror(uri="http://mirror.example/debian", suite="bookworm")
    assert pick_debian_mirror(parse_deb822_sources(DEB822)) == expected
    assert pick_debian_mirror(parse_one_line_sources(ONE_LINE), "bookworm") == expected
    security_first = list(reversed(parse_deb822_sources(DEB822)))
    assert pick_debian_mirror(security_first) == expected


def test_mirror_prefers_the_requested_suite_then_a_debian_archive() -> None:
    third_party = AptSource(uri="https://deb.nodesource.example/node_20.x", suites=("nodistro",))
    trixie = AptSource(uri="http://t.example/debian", suites=("trixie",))
    bookworm = AptSource(uri="http://b.example/debian", suites=("bookworm",))
    assert pick_debian_mirror([third_party, trixie, bookworm], "bookworm").uri == "http://b.example/debian"
    # No entry carries the suite: a Debian-looking archive is still the best bet, with the suite asked for.
    assert pick_debian_mirror([third_party, trixie], "bookworm") == DebianMirror(
        uri="http://t.example/debian", suite="bookworm"
    )
    with pytest.raises(Unavailable):
        pick_debian_mirror(
            parse_one_line_sources("deb http://s.example/debian-security bookworm-security main")
        )


def test_read_debian_mirror_from_an_apt_directory(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "other.list.disabled-by-admin").write_text(
        "deb http://x.example/debian sid main"
    )
    assert read_debian_mirror(tmp_path, "bookworm") == DebianMirror(
        uri="http://mirror.example/debian", suite="bookworm"
    )
    (tmp_path / "sources.list").write_text("deb http://first.example/debian bookworm main\n")
    assert read_debian_mirror(tmp_path).uri == "http://first.example/debian"


def test_tags_are_stable_and_follow_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    python = RECIPES["python"]
    tag = image_tag(python)
    assert re.fullmatch(r"localhost/squall-python:[0-9a-f]{12}", tag)
    assert image_tag(ImageRecipe(kind_family="python", packages=("python3",), suite="bookworm")) == tag
    # A recipe survives a round trip through its encoding with the same tag.
    assert image_tag(msgspec.json.decode(msgspec.json.encode(python), type=ImageRecipe)) == tag
    changed = {
        image_tag(msgspec.structs.replace(python, packages=("python3", "python3-venv"))),
        image_tag(msgspec.structs.replace(python, suite="trixie")),
        image_tag(RECIPES["nodejs"]).replace("nodejs", "python"),
    }
    assert tag not in changed and len(changed) == 3
    monkeypatch.setattr(images, "RECIPE_VERSION", images.RECIPE_VERSION + 1)
    assert image_tag(python) != tag
