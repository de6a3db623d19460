"""The runtime catalog: the action kinds Squall runs, their family defaults, and the image family of each."""

from __future__ import annotations

import re

import msgspec

from broker.errors import BadRequest

SEQUENCE = "sequence"
BLACKBOX = "blackbox"


class Runtime(msgspec.Struct, frozen=True, kw_only=True):
    """One concrete kind. `image_family` names the runtime image the invoker starts for it."""

    kind: str
    family: str
    image_family: str
    default: bool = False
    deprecated: bool = False
    require_main: bool = False
    compiled: bool = False  # compiled at /init (from source): the invoker caches the output by code hash


# Squall's images are built from Debian bookworm packages, so the versions are bookworm's: python3 is
# 3.11, nodejs 18, golang 1.19, openjdk 17, ruby 3.1, php 8.2 and rustc 1.63. Each family has exactly one
# kind, which is therefore its default. `native` is OpenWhisk's dockerskeleton without a registry: the
# action is the executable (a script with a #! line, or a binary in a zip), run in a Debian image.
RUNTIMES: tuple[Runtime, ...] = (
    Runtime(kind="nodejs:18", family="nodejs", image_family="nodejs", default=True),
    Runtime(kind="python:3.11", family="python", image_family="python", default=True),
    Runtime(kind="go:1.19", family="go", image_family="go", default=True, compiled=True),
    Runtime(
        kind="java:17", family="java", image_family="java", default=True, require_main=True, compiled=True
    ),
    Runtime(kind="ruby:3.1", family="ruby", image_family="ruby", default=True),
    Runtime(kind="php:8.2", family="php", image_family="php", default=True),
    Runtime(kind="rust:1.63", family="rust", image_family="rust", default=True, compiled=True),
    Runtime(kind="native", family="native", image_family="native", default=True),
)

# Kinds accepted as another name of a concrete kind. OpenWhisk stores the concrete kind, so do we.
ALIASES: dict[str, str] = {"python:3": "python:3.11", "ruby:3": "ruby:3.1", "php:8": "php:8.2"}

_BY_KIND: dict[str, Runtime] = {rt.kind: rt for rt in RUNTIMES}
_DEFAULTS: dict[str, str] = {rt.family: rt.kind for rt in RUNTIMES if rt.default}
_DEFAULT_KIND = re.compile(r"\A([a-z0-9]+):default\Z")

# OpenWhisk's Exec.isBinaryCode: a non-empty base64 text whose length is a multiple of 4. Written as
# "alphabet, then at most two '=' at the end" with the length check, which is the same language as
# OpenWhisk's grouped pattern and cannot backtrack on a 48 MB string.
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def normalize_kind(kind: str) -> str:
    """OpenWhisk trims and lower-cases the kind before looking it up."""
    return kind.strip().lower()


def resolve_kind(kind: str) -> str:
    """The concrete kind stored for a requested one (`python:default` -> `python:3.11`); 400 if unknown.

    `sequence` resolves to itself; `blackbox` needs a container registry, which Squall does not have, so
    it is refused like any unknown kind.
    """
    wanted = normalize_kind(kind)
    if wanted == SEQUENCE:
        return SEQUENCE
    match = _DEFAULT_KIND.match(wanted)
    if match and match.group(1) in _DEFAULTS:
        return _DEFAULTS[match.group(1)]
    wanted = ALIASES.get(wanted, wanted)
    if wanted in _BY_KIND:
        return wanted
    raise BadRequest(unsupported_kind_message(kind))


def accepted_kinds() -> list[str]:
    """Every kind string a PUT may name, as the 400 message lists them."""
    return sorted({*_BY_KIND, *ALIASES, *(f"{family}:default" for family in _DEFAULTS), SEQUENCE})


def unsupported_kind_message(kind: str) -> str:
    valid = "', '".join(accepted_kinds())
    return f"The specified runtime '{kind}' is not supported by this platform. Valid values are: '{valid}'."


def runtime_of(kind: str) -> Runtime | None:
    """The catalog entry of a stored (concrete) kind; None for sequences and kinds no longer offered."""
    return _BY_KIND.get(kind)


def check_invocable(kind: str) -> None:
    """400 in OpenWhisk's words for a stored action whose runtime is no longer offered (sequences run)."""
    if kind != SEQUENCE and runtime_of(kind) is None:
        raise BadRequest(
            f"The '{kind}' runtime is no longer supported. "
            "You may read and delete but not update or invoke this action."
        )


def family_of(kind: str) -> str | None:
    """The image family an invoker needs to run `kind`; None for a kind that needs none (a sequence)."""
    runtime = runtime_of(kind)
    return None if runtime is None else runtime.image_family


def image_family(kind: str) -> str:
    """The runtime image family an action of `kind` runs on; 400 for a kind that does not run in one."""
    runtime = runtime_of(kind)
    if runtime is None:
        raise BadRequest(unsupported_kind_message(kind))
    return runtime.image_family


def is_binary_code(code: str) -> bool:
    """Whether action code is base64 (a zip), decided exactly as OpenWhisk does."""
    text = code.strip()
    return len(text) > 0 and len(text) % 4 == 0 and _BASE64.fullmatch(text) is not None


def runtimes_document() -> dict[str, list[dict[str, object]]]:
    """The `runtimes` member of `GET /`: families to their kinds, in OpenWhisk's manifest shape."""
    families: dict[str, list[dict[str, object]]] = {}
    for rt in RUNTIMES:
        families.setdefault(rt.family, []).append(
            {
                "kind": rt.kind,
                "image": f"squall-{rt.image_family}",
                "deprecated": rt.deprecated,
                "default": rt.default,
                "attached": False,
                "requireMain": rt.require_main,
            }
        )
    return families
