"""OpenWhisk entities as stored and served: actions, triggers, rules, packages (OpenWhisk field names)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from broker.errors import BadRequest
from broker.retry_policy import RetryPolicy

# OpenWhisk's EntityName rule. Java's `\w` is ASCII-only, hence re.ASCII; Python spells `\z` as `\Z`.
_NAME_RE = re.compile(r"\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\Z", re.ASCII)
NAME_MAX_LENGTH = 256
INITIAL_VERSION = "0.0.1"

RULE_ACTIVE = "active"
RULE_INACTIVE = "inactive"


class KeyValue(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """OpenWhisk's `{key, value}` pair, used for parameters and annotations."""

    key: str
    value: Any  # required, so a null value is still written out (omit_defaults would drop it)
    init: bool = False  # parameters only: passed as environment at /init


class FullyQualifiedName(msgspec.Struct, frozen=True, kw_only=True):
    """`{path, name}` as rules and trigger rule maps show it; `path` is `ns` or `ns/pkg`."""

    path: str
    name: str

    def __str__(self) -> str:
        return f"/{self.path}/{self.name}"


class Exec(msgspec.Struct, frozen=True, kw_only=True):
    """What an action runs. One struct for all kinds: a tagged union cannot key on `python:3.11`-like tags.

    Absent fields are UNSET (never written), so a code action reads `{kind, code, binary[, main]}`,
    a blackbox `{kind, image, binary}` and a sequence `{kind, components}` as in OpenWhisk.
    """

    kind: str
    code: str | UnsetType = UNSET
    binary: bool | UnsetType = UNSET
    main: str | UnsetType = UNSET
    image: str | UnsetType = UNSET
    components: list[str] | UnsetType = UNSET


class ActionLimits(msgspec.Struct, frozen=True, kw_only=True):
    timeout: int = 60000  # ms
    memory: int = 256  # MB
    logs: int = 10  # MB
    concurrency: int = 1
    instances: int | UnsetType = UNSET  # new scheduler only: shown when set


class TriggerLimits(msgspec.Struct, frozen=True, kw_only=True):
    """OpenWhisk triggers carry an empty `limits` object."""


class ReducedRule(msgspec.Struct, frozen=True, kw_only=True):
    """A rule as its trigger records it: the trigger holds each rule's status (OpenWhisk design), and in
    Squall also its filter and retry policy, so that a fire reads one record to know what to run."""

    action: FullyQualifiedName
    status: str = RULE_ACTIVE
    filter: dict[str, Any] | UnsetType = UNSET  # an event pattern (broker/event_patterns.py)
    retry: RetryPolicy | UnsetType = UNSET


class Binding(msgspec.Struct, frozen=True, kw_only=True):
    """A package binding: `{}` for a plain package, `{namespace, name}` for a binding."""

    namespace: str | UnsetType = UNSET
    name: str | UnsetType = UNSET

    @property
    def is_bound(self) -> bool:
        return isinstance(self.namespace, str) and isinstance(self.name, str)


class Entity(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every OpenWhisk entity has. `namespace` is `ns`, or `ns/pkg` for a packaged action."""

    namespace: str
    name: str
    version: str = INITIAL_VERSION
    publish: bool = False
    annotations: list[KeyValue] = []
    updated: int = 0  # epoch ms, stamped by the store on every write


class Action(Entity, frozen=True, kw_only=True):
    exec: Exec
    parameters: list[KeyValue] = []
    limits: ActionLimits = ActionLimits()


class Trigger(Entity, frozen=True, kw_only=True):
    parameters: list[KeyValue] = []
    limits: TriggerLimits = TriggerLimits()
    rules: dict[str, ReducedRule] | UnsetType = UNSET  # "ns/rule" -> rule; absent until a rule binds


class Rule(Entity, frozen=True, kw_only=True):
    status: str = RULE_ACTIVE
    trigger: FullyQualifiedName
    action: FullyQualifiedName
    filter: dict[str, Any] | UnsetType = UNSET  # Squall: only events matching this pattern invoke
    retry: RetryPolicy | UnsetType = UNSET  # Squall: how failed runs are retried before dead-lettering


class Package(Entity, frozen=True, kw_only=True):
    parameters: list[KeyValue] = []
    binding: Binding = Binding()


E = TypeVar("E", bound=Entity)


@dataclass(frozen=True, slots=True)
class Collection(Generic[E]):
    """A collection name as it appears in URLs, tied to the Struct its entities decode into."""

    name: str
    type: type[E]


ACTIONS = Collection("actions", Action)
TRIGGERS = Collection("triggers", Trigger)
RULES = Collection("rules", Rule)
PACKAGES = Collection("packages", Package)
COLLECTIONS: dict[str, Collection[Any]] = {c.name: c for c in (ACTIONS, TRIGGERS, RULES, PACKAGES)}


def collection(name: str) -> Collection[Any]:
    """The collection called `name` in a URL; anything else is a client error."""
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise BadRequest(f"unknown collection '{name}'") from None


def validate_name(name: str, what: str = "name") -> str:
    """Check an entity (or namespace, or package) name against OpenWhisk's rule; return it unchanged."""
    if len(name) > NAME_MAX_LENGTH:
        raise BadRequest(f"The {what} is {len(name)} characters long; at most {NAME_MAX_LENGTH} are allowed.")
    if not _NAME_RE.match(name):
        raise BadRequest(
            f"The {what} '{name}' is not allowed: use letters, digits and '_', "
            "plus '@', '.', '&', '-' or spaces inside (not leading, no trailing space)."
        )
    return name


def split_path(path: str) -> tuple[str | None, str]:
    """Split `name` or `pkg/name` into (package or None, name), validating both parts."""
    parts = path.split("/")
    if len(parts) == 1:
        return None, validate_name(parts[0])
    if len(parts) == 2:
        return validate_name(parts[0], "package name"), validate_name(parts[1])
    raise BadRequest(f"The path '{path}' is not allowed: packages do not nest.")


def join_path(package: str | None, name: str) -> str:
    return name if package is None else f"{package}/{name}"


def split_namespace(namespace: str) -> tuple[str, str | None]:
    """An entity's `namespace` field (`ns` or `ns/pkg`) as (root namespace, package or None)."""
    root, _, package = namespace.partition("/")
    return root, package or None


def storage_path(entity: Entity) -> tuple[str, str]:
    """Where an entity lives: (root namespace, `name` or `pkg/name`)."""
    root, package = split_namespace(entity.namespace)
    return root, join_path(package, entity.name)


def parse_fqn(ref: str, default_namespace: str) -> FullyQualifiedName:
    """Resolve `/ns/[pkg/]name` or a relative `[pkg/]name` (in `default_namespace`) to `{path, name}`."""
    if ref.startswith("/"):
        parts = ref[1:].split("/")
        if len(parts) not in (2, 3):
            raise BadRequest(f"The fully qualified name '{ref}' must look like /namespace/[package/]name.")
        namespace, rest = parts[0], parts[1:]
    else:
        namespace, rest = default_namespace, ref.split("/")
        if len(rest) > 2:
            raise BadRequest(f"The name '{ref}' is not allowed: packages do not nest.")
    for part in (namespace, *rest):
        validate_name(part)
    return FullyQualifiedName(path="/".join((namespace, *rest[:-1])), name=rest[-1])


def bump_patch(version: str) -> str:
    """`0.0.1` -> `0.0.2`: OpenWhisk bumps the patch number on every update."""
    try:
        major, minor, patch = (int(p) for p in version.split("."))
    except ValueError:
        raise BadRequest(f"The version '{version}' is not a semantic version (major.minor.patch).") from None
    if min(major, minor, patch) < 0:
        raise BadRequest(f"The version '{version}' has a negative part.")
    return f"{major}.{minor}.{patch + 1}"
