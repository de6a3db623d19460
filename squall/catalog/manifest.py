"""The catalog as data: catalog.toml and the action sources read into the entities whisk.system should hold."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from api.entity_views import ActionPut, ExecPut, PackagePut, code_exec, new_action, new_package
from broker import codec
from broker.entities import ACTIONS, PACKAGES, Action, KeyValue, Package
from broker.feed_registry import FEED_PROVIDER_ANNOTATION

# A digest of what the catalog defines for an entity: the installer rewrites an entity whose digest differs,
# and deletes only entities that carry one (so a user's own entity in the namespace is never touched).
DIGEST_ANNOTATION: Final = "squall-catalog-digest"
FEED_ANNOTATION: Final = "feed"
FEED_STUB: Final = "feeds/stub.js"
_MANIFEST: Final = "catalog.toml"


class ParameterDoc(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of OpenWhisk's `parameters` annotation, which documents (does not bind) a parameter."""

    name: str
    required: bool | UnsetType = UNSET
    type: str | UnsetType = UNSET
    description: str | UnsetType = UNSET


class ActionSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: str | UnsetType = UNSET  # a file under actions/; a feed action runs the feed stub
    feed: str | UnsetType = UNSET  # the feeds role's provider that serves this feed action
    description: str
    parameters: list[ParameterDoc] | UnsetType = UNSET
    sampleInput: dict[str, Any] | UnsetType = UNSET
    sampleOutput: dict[str, Any] | UnsetType = UNSET
    sampleLogOutput: str | UnsetType = UNSET


class PackageSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str
    parameters: list[ParameterDoc] | UnsetType = UNSET
    bound: dict[str, Any] = {}  # parameters bound on the package (what every action of it receives)
    actions: dict[str, ActionSpec] = {}


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str
    packages: dict[str, PackageSpec]


@dataclass(frozen=True, slots=True)
class CatalogEntity:
    """One entity the catalog defines: a package (`path` = `pkg`) or an action (`path` = `pkg/name`)."""

    path: str
    entity: Package | Action
    digest: str

    @property
    def collection(self) -> str:
        return PACKAGES.name if isinstance(self.entity, Package) else ACTIONS.name


@cache
def manifest() -> Manifest:
    return msgspec.toml.decode(_read(_MANIFEST), type=Manifest)


def _read(name: str) -> bytes:
    return resources.files("squall.catalog").joinpath(name).read_bytes()


def action_source(path: str) -> str:
    """The source of an action file under actions/ (e.g. `utils/echo.js`)."""
    return _read(f"actions/{path}").decode()


def feed_providers(spec: Manifest | None = None) -> dict[str, str]:
    """Each feed action (`pkg/name`, relative to the system namespace) and the provider that serves it."""
    spec = spec or manifest()
    return {
        f"{pkg}/{name}": action.feed
        for pkg, package in spec.packages.items()
        for name, action in package.actions.items()
        if isinstance(action.feed, str)
    }


def _documentation(spec: ActionSpec | PackageSpec) -> list[KeyValue]:
    """OpenWhisk's documenting annotations: description, parameters and the samples, as the catalog sets them."""
    found = [KeyValue(key="description", value=spec.description)]
    if isinstance(spec.parameters, list):
        found.append(KeyValue(key="parameters", value=msgspec.to_builtins(spec.parameters)))
    if isinstance(spec, ActionSpec):
        for key in ("sampleInput", "sampleOutput", "sampleLogOutput"):
            value = getattr(spec, key)
            if value is not UNSET:
                found.append(KeyValue(key=key, value=value))
    return found


def digest_of(entity: Package | Action) -> str:
    """A digest of an entity's definition, which excludes what the store and updates stamp on it."""
    definition = msgspec.structs.replace(entity, version="", updated=0)
    return hashlib.sha256(codec.encode(definition)).hexdigest()[:32]


def _stamped(entity: Package | Action) -> tuple[Package | Action, str]:
    digest = digest_of(entity)
    annotations = [*entity.annotations, KeyValue(key=DIGEST_ANNOTATION, value=digest)]
    return msgspec.structs.replace(entity, annotations=annotations), digest


def _action(namespace: str, package: str, name: str, spec: ActionSpec, kind: str) -> Action:
    annotations = _documentation(spec)
    if isinstance(spec.feed, str):
        annotations += [
            KeyValue(key=FEED_ANNOTATION, value=True),
            KeyValue(key=FEED_PROVIDER_ANNOTATION, value=spec.feed),
        ]
        code = action_source(FEED_STUB)
    elif isinstance(spec.code, str):
        code = action_source(spec.code)
    else:
        raise ValueError(f"catalog action {package}/{name} has neither code nor feed")
    # Built as the API builds an action from a PUT: concrete kind, `binary`, `exec` and
    # `provide-api-key: false` annotations, default limits.
    put = ActionPut(annotations=annotations, publish=True)
    exec = code_exec(ExecPut(kind=kind, code=code))
    return new_action(put, namespace=f"{namespace}/{package}", name=name, exec=exec)


def _package(namespace: str, name: str, spec: PackageSpec) -> Package:
    put = PackagePut(
        annotations=_documentation(spec),
        parameters=[KeyValue(key=k, value=v) for k, v in spec.bound.items()],
        publish=True,
    )
    return new_package(put, namespace=namespace, name=name, binding=None)


def catalog_entities(namespace: str, spec: Manifest | None = None) -> list[CatalogEntity]:
    """Every entity of the catalog in `namespace`, each package before its actions, stamped with its digest."""
    spec = spec or manifest()
    found: list[CatalogEntity] = []
    for pkg, package in spec.packages.items():
        entity, digest = _stamped(_package(namespace, pkg, package))
        found.append(CatalogEntity(path=pkg, entity=entity, digest=digest))
        for name, action in package.actions.items():
            entity, digest = _stamped(_action(namespace, pkg, name, action, spec.kind))
            found.append(CatalogEntity(path=f"{pkg}/{name}", entity=entity, digest=digest))
    return found
