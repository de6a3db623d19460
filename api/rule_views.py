"""Rule request and response shapes, and the pure steps of a rule PUT: resolving references, merging.

Squall adds two optional rule fields, `filter` (an event pattern, broker/event_patterns.py) and `retry` (a
RetryPolicy). They are validated when the rule is written: a malformed pattern or policy is a 400, a pattern
whose compact JSON passes MAX_FILTER_BYTES a 413 (like OpenWhisk's other size limits), and nothing is
written. A rule without them has OpenWhisk's exact shape: the fields are absent, never `null`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from api.entity_views import EntitySummary
from broker.entities import (
    INITIAL_VERSION,
    FullyQualifiedName,
    KeyValue,
    Rule,
    bump_patch,
    parse_fqn,
    split_namespace,
    validate_name,
)
from broker.errors import BadRequest
from broker.event_patterns import validate_pattern
from broker.limits import check_entity_sizes, too_large
from broker.params import normalize
from broker.retry_policy import RetryPolicy, validate_retry

OWN_NAMESPACE = "_"
T = TypeVar("T")

# A reference is `/ns/[pkg/]name`, a name relative to the caller's namespace, or `{path, name}` (the form
# GET returns, so a fetched rule can be put back as it is).
Ref = str | FullyQualifiedName

# A filter is matched against every event of its trigger, and travels in the trigger record the rule engine
# reads on each fire: 64 KB is far more than a readable pattern needs, and keeps the trigger record small.
MAX_FILTER_BYTES = 64 * 1024


class RulePut(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `PUT …/rules/{name}` (OpenWhisk's WhiskRulePut); absent fields keep stored values.

    Squall adds an optional `filter` (an event pattern) and `retry` (a retry policy); on update, leaving
    one out keeps the stored value and `null` removes it.
    """

    trigger: Ref | None = None
    action: Ref | None = None
    version: str | None = None
    publish: bool | None = None
    annotations: list[KeyValue] | None = None
    filter: dict[str, Any] | UnsetType | None = UNSET
    retry: RetryPolicy | UnsetType | None = UNSET


class RuleStatusBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of `POST …/rules/{name}`: `{"status": "active" | "inactive"}`, checked by parse_status."""

    status: Any = None


class RuleView(EntitySummary, frozen=True, kw_only=True):
    """A rule as GET, PUT and DELETE return it: the stored rule plus the status its trigger records."""

    status: str
    trigger: FullyQualifiedName
    action: FullyQualifiedName
    filter: dict[str, Any] | UnsetType = UNSET  # shown only when the rule has one
    retry: RetryPolicy | UnsetType = UNSET


class RuleListItem(EntitySummary, frozen=True, kw_only=True):
    """A list item of `GET …/rules`: OpenWhisk lists the rule documents, which carry no status."""

    trigger: FullyQualifiedName
    action: FullyQualifiedName
    filter: dict[str, Any] | UnsetType = UNSET
    retry: RetryPolicy | UnsetType = UNSET


class RuleCount(msgspec.Struct, frozen=True, kw_only=True):
    """`GET …/rules?count=true`."""

    rules: int


class RuleContent(msgspec.Struct, frozen=True, kw_only=True):
    """A PUT body with its references resolved to the caller's namespace and validated."""

    trigger: FullyQualifiedName | None
    action: FullyQualifiedName | None
    version: str | None
    publish: bool | None
    annotations: list[KeyValue] | None
    filter: dict[str, Any] | UnsetType | None = UNSET  # UNSET: keep the stored one; None: remove it
    retry: RetryPolicy | UnsetType | None = UNSET


def view(rule: Rule, status: str) -> RuleView:
    return RuleView(
        namespace=rule.namespace,
        name=rule.name,
        version=rule.version,
        publish=rule.publish,
        annotations=rule.annotations,
        updated=rule.updated,
        status=status,
        trigger=rule.trigger,
        action=rule.action,
        filter=rule.filter,
        retry=rule.retry,
    )


def list_item(rule: Rule) -> RuleListItem:
    return RuleListItem(
        namespace=rule.namespace,
        name=rule.name,
        version=rule.version,
        publish=rule.publish,
        annotations=rule.annotations,
        updated=rule.updated,
        trigger=rule.trigger,
        action=rule.action,
        filter=rule.filter,
        retry=rule.retry,
    )


def resolve_ref(ref: Ref, namespace: str) -> FullyQualifiedName:
    """`{path, name}` of a reference, with `_` (and a relative name) meaning the caller's `namespace`."""
    if isinstance(ref, str):
        fqn = parse_fqn(ref, namespace)
    else:
        parts = ref.path.split("/")
        if not 1 <= len(parts) <= 2:
            raise BadRequest(f"The path '{ref.path}' must look like namespace[/package].")
        for part in (*parts, ref.name):
            validate_name(part)
        fqn = ref
    root, package = split_namespace(fqn.path)
    if root == OWN_NAMESPACE:
        fqn = FullyQualifiedName(
            path=namespace if package is None else f"{namespace}/{package}", name=fqn.name
        )
    return fqn


def resolve_put(put: RulePut, namespace: str) -> RuleContent:
    """Everything about a PUT body that can be checked before reading the store."""
    check_entity_sizes(annotations=put.annotations)
    if put.version is not None:
        bump_patch(put.version)  # validates the semantic version
    if isinstance(put.filter, dict):
        check_filter(put.filter)
    if isinstance(put.retry, RetryPolicy):
        validate_retry(put.retry)
    return RuleContent(
        trigger=None if put.trigger is None else resolve_ref(put.trigger, namespace),
        action=None if put.action is None else resolve_ref(put.action, namespace),
        version=put.version,
        publish=put.publish,
        annotations=None if put.annotations is None else normalize(put.annotations),
        filter=put.filter,
        retry=put.retry,
    )


def check_filter(pattern: dict[str, Any]) -> None:
    """413 when the pattern's compact JSON passes MAX_FILTER_BYTES, 400 unless it is a valid event pattern."""
    size = len(msgspec.json.encode(pattern))
    if size > MAX_FILTER_BYTES:
        raise too_large("filter", size, MAX_FILTER_BYTES)
    validate_pattern(pattern)


def new_rule(content: RuleContent, namespace: str, name: str) -> Rule:
    """The rule a PUT creates; OpenWhisk needs both references for that."""
    if content.trigger is None or content.action is None:
        raise BadRequest("rule requires a valid trigger and a valid action")
    return Rule(
        namespace=namespace,
        name=name,
        version=content.version or INITIAL_VERSION,
        publish=bool(content.publish),
        annotations=content.annotations or [],
        trigger=content.trigger,
        action=content.action,
        filter=UNSET if content.filter is None else content.filter,
        retry=UNSET if content.retry is None else content.retry,
    )


def updated_rule(content: RuleContent, current: Rule) -> Rule:
    """`current` with the fields the body gives replaced (the caller bumps the version)."""
    return msgspec.structs.replace(
        current,
        trigger=content.trigger or current.trigger,
        action=content.action or current.action,
        publish=current.publish if content.publish is None else content.publish,
        annotations=current.annotations if content.annotations is None else content.annotations,
        filter=_merged(content.filter, current.filter),
        retry=_merged(content.retry, current.retry),
    )


def _merged(given: T | UnsetType | None, stored: T | UnsetType) -> T | UnsetType:
    """An optional Squall field after an update: absent keeps `stored`, `null` removes it."""
    if given is UNSET:
        return stored
    return UNSET if given is None else given
