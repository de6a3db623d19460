"""Action and package PUT bodies, how a body becomes the stored entity (pure), and the shapes lists show."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from broker import kinds, limits, params
from broker.entities import (
    INITIAL_VERSION,
    Action,
    ActionLimits,
    Binding,
    Exec,
    FullyQualifiedName,
    KeyValue,
    Package,
    bump_patch,
    validate_name,
)
from broker.errors import BadRequest, Conflict
from broker.invocations import PROVIDE_API_KEY

MALFORMED = "The request content was malformed:\n"
EXEC_ANNOTATION = "exec"
BINDING_ANNOTATION = "binding"
FEED_ANNOTATION = "feed"
SEQUENCE_PARAMETER = "_actions"
OWN_NAMESPACE = "_"

# OpenWhisk's Messages for the rules this module enforces.
EXEC_UNDEFINED = "exec undefined"
NOT_A_BINDING_TARGET = "Resource is a package and cannot be converted into a binding."
MALFORMED_FQN = (
    "The fully qualified name of the entity must contain at least the namespace and the name of the entity."
)


# -- request bodies: every field optional, because an update keeps what it does not name -----------------


class ExecPut(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    code: str | UnsetType = UNSET
    main: str | UnsetType = UNSET
    image: str | UnsetType = UNSET
    components: list[str] | UnsetType | None = UNSET
    binary: bool | UnsetType = UNSET  # accepted from clients, but always recomputed from the code


class LimitsPut(msgspec.Struct, frozen=True, kw_only=True):
    timeout: int | UnsetType | None = UNSET
    memory: int | UnsetType | None = UNSET
    logs: int | UnsetType | None = UNSET
    concurrency: int | UnsetType | None = UNSET


class ActionPut(msgspec.Struct, frozen=True, kw_only=True):
    exec: ExecPut | UnsetType | None = UNSET
    parameters: list[KeyValue] | UnsetType | None = UNSET
    annotations: list[KeyValue] | UnsetType | None = UNSET
    delAnnotations: list[str] | UnsetType | None = UNSET
    limits: LimitsPut | UnsetType | None = UNSET
    version: str | UnsetType | None = UNSET
    publish: bool | UnsetType | None = UNSET


class BindingPut(msgspec.Struct, frozen=True, kw_only=True):
    """`{}` means "no binding"; otherwise both fields are required."""

    namespace: str | UnsetType = UNSET
    name: str | UnsetType = UNSET


class PackagePut(msgspec.Struct, frozen=True, kw_only=True):
    binding: BindingPut | UnsetType | None = UNSET
    parameters: list[KeyValue] | UnsetType | None = UNSET
    annotations: list[KeyValue] | UnsetType | None = UNSET
    version: str | UnsetType | None = UNSET
    publish: bool | UnsetType | None = UNSET


def given(value: Any) -> bool:
    """A body field counts as given unless absent or null, as OpenWhisk's `Option` fields read."""
    return value is not None and value is not UNSET


# -- actions ----------------------------------------------------------------------------------------------


def parse_component(ref: str, namespace: str) -> FullyQualifiedName:
    """A sequence component `/ns/[pkg/]name` (leading slash optional); `_` is the caller's namespace."""
    parts = ref.removeprefix("/").split("/")
    if len(parts) not in (2, 3):
        raise BadRequest(MALFORMED + MALFORMED_FQN)
    if parts[0] == OWN_NAMESPACE:
        parts[0] = namespace
    for part in parts:
        validate_name(part)
    return FullyQualifiedName(path="/".join(parts[:-1]), name=parts[-1])


def sequence_components(put: ExecPut, namespace: str) -> list[FullyQualifiedName]:
    if not isinstance(put.components, list):
        raise BadRequest(MALFORMED + "'components' must be defined for sequence kind")
    return [parse_component(ref, namespace) for ref in put.components]


def code_exec(put: ExecPut) -> Exec:
    """The stored exec of a code action: concrete kind, code, computed `binary`, optional `main`."""
    kind = kinds.resolve_kind(put.kind)
    if not isinstance(put.code, str):
        raise BadRequest(MALFORMED + f"'code' must be a string defined in 'exec' for '{put.kind}' actions")
    return Exec(kind=kind, code=put.code, binary=kinds.is_binary_code(put.code), main=put.main)


def sequence_exec(components: list[FullyQualifiedName]) -> Exec:
    return Exec(kind=kinds.SEQUENCE, components=[str(c) for c in components])


def exec_size(exec: Exec) -> int:
    """OpenWhisk's `Exec.size`: code plus entry point, or the components' names for a sequence."""
    if isinstance(exec.components, list):
        return sum(len(c.removeprefix("/").encode()) for c in exec.components)
    code = exec.code if isinstance(exec.code, str) else ""
    main = exec.main if isinstance(exec.main, str) else ""
    return len(code.encode()) + len(main.encode())


def merged_limits(base: ActionLimits, put: LimitsPut | UnsetType | None) -> ActionLimits:
    """`base` with the limits the body names replaced, validated against OpenWhisk's ranges."""
    if not isinstance(put, LimitsPut):
        return limits.check_action_limits(base)
    changes = {
        f: getattr(put, f) for f in ("timeout", "memory", "logs", "concurrency") if given(getattr(put, f))
    }
    return limits.check_action_limits(msgspec.structs.replace(base, **changes))


def checked_version(version: str) -> str:
    bump_patch(version)  # raises the 400 for anything that is not major.minor.patch
    return version


def amend_annotations(annotations: list[KeyValue], exec: Exec, *, create: bool) -> list[KeyValue]:
    """Add what the controller owns: `provide-api-key:false` on create unless given, and `exec:<kind>` always."""
    if create and not params.has_key(annotations, PROVIDE_API_KEY):
        annotations = [*annotations, KeyValue(key=PROVIDE_API_KEY, value=False)]
    return params.merge(annotations, [KeyValue(key=EXEC_ANNOTATION, value=exec.kind)])


def _sequence_parameters(exec: Exec) -> list[KeyValue]:
    # OpenWhisk keeps a sequence's components as its only parameter; anything sent is discarded.
    return [KeyValue(key=SEQUENCE_PARAMETER, value=list(exec.components or []))]


def new_action(put: ActionPut, *, namespace: str, name: str, exec: Exec | None) -> Action:
    """The action a PUT creates; `exec` is the body's exec already resolved (None when absent)."""
    if exec is None:
        raise BadRequest(EXEC_UNDEFINED)
    is_sequence = exec.kind == kinds.SEQUENCE
    body_params = params.normalize(put.parameters) if isinstance(put.parameters, list) else []
    annotations = params.normalize(put.annotations) if isinstance(put.annotations, list) else []
    return Action(
        namespace=namespace,
        name=name,
        exec=exec,
        parameters=_sequence_parameters(exec) if is_sequence else body_params,
        limits=merged_limits(ActionLimits(), put.limits),
        version=checked_version(put.version) if isinstance(put.version, str) else INITIAL_VERSION,
        publish=put.publish if isinstance(put.publish, bool) else False,
        annotations=amend_annotations(annotations, exec, create=True),
    )


def updated_action(put: ActionPut, current: Action, exec: Exec | None) -> Action:
    """An existing action with what the PUT names replaced; the store bumps the version."""
    new_exec = exec or current.exec
    was_sequence = current.exec.kind == kinds.SEQUENCE
    body_params = params.normalize(put.parameters) if isinstance(put.parameters, list) else None
    if exec is not None and exec.kind == kinds.SEQUENCE:
        parameters = _sequence_parameters(exec)
    elif exec is not None:
        # A sequence's `_actions` must not leak into the code action it becomes.
        parameters = body_params if body_params is not None else ([] if was_sequence else current.parameters)
    else:
        parameters = current.parameters if was_sequence or body_params is None else body_params
    base = current.annotations
    if isinstance(put.delAnnotations, list):
        base = params.without(base, put.delAnnotations)
    if isinstance(put.annotations, list):
        base = params.merge(base, params.normalize(put.annotations))
    return msgspec.structs.replace(
        current,
        exec=new_exec,
        parameters=parameters,
        limits=merged_limits(current.limits, put.limits),
        publish=put.publish if isinstance(put.publish, bool) else current.publish,
        annotations=amend_annotations(base, new_exec, create=False),
    )


def without_code(action: Action) -> Action:
    """`GET …?code=false`: the action with `exec.code` left out."""
    return msgspec.structs.replace(action, exec=msgspec.structs.replace(action.exec, code=UNSET))


# -- packages ---------------------------------------------------------------------------------------------


def requested_binding(put: PackagePut, namespace: str) -> Binding | None:
    """The package a PUT binds to (`_` meaning `namespace`), or None when it names no binding."""
    b = put.binding
    if not isinstance(b, BindingPut) or (b.namespace is UNSET and b.name is UNSET):
        return None
    if not isinstance(b.namespace, str) or not isinstance(b.name, str):
        raise BadRequest(MALFORMED + "a binding needs both 'namespace' and 'name'")
    target = namespace if b.namespace == OWN_NAMESPACE else b.namespace
    return Binding(namespace=validate_name(target, "namespace"), name=validate_name(b.name, "package name"))


def _binding_annotations(annotations: list[KeyValue], binding: Binding) -> list[KeyValue]:
    # The `binding` annotation belongs to the controller: whatever a client sends is replaced.
    base = params.without(annotations, [BINDING_ANNOTATION])
    if not binding.is_bound:
        return base
    return [
        *base,
        KeyValue(key=BINDING_ANNOTATION, value={"namespace": binding.namespace, "name": binding.name}),
    ]


def new_package(put: PackagePut, *, namespace: str, name: str, binding: Binding | None) -> Package:
    annotations = params.normalize(put.annotations) if isinstance(put.annotations, list) else []
    bound = binding or Binding()
    return Package(
        namespace=namespace,
        name=name,
        binding=bound,
        parameters=params.normalize(put.parameters) if isinstance(put.parameters, list) else [],
        version=checked_version(put.version) if isinstance(put.version, str) else INITIAL_VERSION,
        publish=put.publish if isinstance(put.publish, bool) else False,
        annotations=_binding_annotations(annotations, bound),
    )


def updated_package(put: PackagePut, current: Package, binding: Binding | None) -> Package:
    """Packages replace (not merge) parameters and annotations that a PUT names, as OpenWhisk does."""
    if binding is not None and not current.binding.is_bound:
        raise Conflict(NOT_A_BINDING_TARGET)
    bound = binding or current.binding
    annotations = (
        params.normalize(put.annotations) if isinstance(put.annotations, list) else current.annotations
    )
    return msgspec.structs.replace(
        current,
        binding=bound,
        parameters=params.normalize(put.parameters)
        if isinstance(put.parameters, list)
        else current.parameters,
        publish=put.publish if isinstance(put.publish, bool) else current.publish,
        annotations=_binding_annotations(annotations, bound),
    )


# -- what lists and package reads show -------------------------------------------------------------------


class EntitySummary(msgspec.Struct, frozen=True, kw_only=True):
    """The fields every OpenWhisk list item and entity view starts with."""

    namespace: str
    name: str
    version: str
    publish: bool
    annotations: list[KeyValue]
    updated: int


class ExecSummary(msgspec.Struct, frozen=True, kw_only=True):
    binary: bool = False


class ActionSummary(EntitySummary, frozen=True, kw_only=True):
    limits: ActionLimits
    exec: ExecSummary


class PackageSummary(EntitySummary, frozen=True, kw_only=True):
    binding: Binding | bool  # `false` for a package, `{namespace, name}` for a binding


class PackageAction(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    annotations: list[KeyValue]


class PackageWithActions(Package, frozen=True, kw_only=True):
    actions: list[PackageAction] = []
    feeds: list[PackageAction] = []


def action_summary(action: Action) -> ActionSummary:
    return ActionSummary(
        namespace=action.namespace,
        name=action.name,
        version=action.version,
        publish=action.publish,
        annotations=action.annotations,
        updated=action.updated,
        limits=action.limits,
        exec=ExecSummary(binary=action.exec.binary is True),
    )


def package_summary(package: Package) -> PackageSummary:
    return PackageSummary(
        namespace=package.namespace,
        name=package.name,
        version=package.version,
        publish=package.publish,
        annotations=package.annotations,
        updated=package.updated,
        binding=package.binding if package.binding.is_bound else False,
    )


def package_view(package: Package, contents: list[Action], parameters: list[KeyValue]) -> PackageWithActions:
    """A package GET: the package (parameters merged with its bound package's) plus its actions and feeds."""
    # OpenWhisk calls an action a feed when it has a `feed` annotation, whatever its value.
    is_feed = [params.has_key(a.annotations, FEED_ANNOTATION) for a in contents]
    return PackageWithActions(
        **(msgspec.structs.asdict(package) | {"parameters": parameters}),
        actions=[_package_action(a) for a, feed in zip(contents, is_feed, strict=True) if not feed],
        feeds=[_package_action(a) for a, feed in zip(contents, is_feed, strict=True) if feed],
    )


def _package_action(action: Action) -> PackageAction:
    return PackageAction(name=action.name, version=action.version, annotations=action.annotations)
