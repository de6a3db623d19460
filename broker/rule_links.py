"""Rules as their triggers record them: link, unlink, and a rule's effective status (pure functions).

OpenWhisk keeps a rule's status on its trigger (`trigger.rules["ns/rule"] = {action, status}`), so that a fire
reads one record to know which actions to run; Squall copies the rule's `filter` and `retry` there too, for the
same reason. The rule record says *what* the rule binds; the trigger's map says *whether* it is active (and
is what a fire acts on). Every function here is pure: callers read the trigger, apply one of them, and write
the result back under the trigger's KV revision (retrying on a concurrent change).

Two KV writes cannot be atomic, so broker/rules.py orders them so that an interruption leaves a state that
reads correctly and never fires for a rule that does not mean it:
- a rule whose trigger does not list it reads `inactive` (and fires nothing);
- a link is written only after the rule record that justifies it, and removed before that record goes.
Enabling the rule (`POST {"status":"active"}`) or putting it again repairs any interrupted state.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from broker.entities import (
    RULE_ACTIVE,
    RULE_INACTIVE,
    FullyQualifiedName,
    ReducedRule,
    Rule,
    Trigger,
)
from broker.errors import BadRequest
from broker.retry_policy import RetryPolicy

STATUSES = (RULE_ACTIVE, RULE_INACTIVE)


def rule_key(namespace: str, name: str) -> str:
    """The key of a rule in its trigger's `rules` map: `ns/rule`, as OpenWhisk writes it."""
    return f"{namespace}/{name}"


def key_of(rule: Rule) -> str:
    return rule_key(rule.namespace, rule.name)


def trigger_ref(trigger: Trigger) -> FullyQualifiedName:
    """The `{path, name}` a rule uses to point at `trigger`."""
    return FullyQualifiedName(path=trigger.namespace, name=trigger.name)


def link_of(trigger: Trigger | None, key: str) -> ReducedRule | None:
    """The trigger's record of rule `key`, or None when the trigger is gone or does not list it."""
    if trigger is None or trigger.rules is UNSET:
        return None
    return trigger.rules.get(key)


def effective_status(rule: Rule, trigger: Trigger | None) -> str:
    """The status a rule reads as: its trigger's record of it, `inactive` when there is none.

    `trigger` is what was found at `rule.trigger` (None: deleted). A trigger that is not the rule's own
    (e.g. a stale read) cannot make the rule active either.
    """
    if trigger is None or trigger_ref(trigger) != rule.trigger:
        return RULE_INACTIVE
    link = link_of(trigger, key_of(rule))
    return link.status if link is not None else RULE_INACTIVE


def link(
    trigger: Trigger,
    key: str,
    action: FullyQualifiedName,
    status: str,
    *,
    filter: dict[str, Any] | UnsetType = UNSET,
    retry: RetryPolicy | UnsetType = UNSET,
) -> Trigger | None:
    """`trigger` with rule `key` bound to `action` in `status`, with that filter and retry policy (none when
    UNSET); None when it already says exactly that.

    Returning None lets callers skip a write (and the `updated` stamp it brings) for a no-op.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown rule status {status!r}")
    wanted = ReducedRule(action=action, status=status, filter=filter, retry=retry)
    if link_of(trigger, key) == wanted:
        return None
    rules = {} if trigger.rules is UNSET else dict(trigger.rules)
    rules[key] = wanted
    return msgspec.structs.replace(trigger, rules=rules)


def link_rule(trigger: Trigger, rule: Rule, status: str) -> Trigger | None:
    """`link` for `rule` as its record says (action, filter, retry), in `status`."""
    return link(trigger, key_of(rule), rule.action, status, filter=rule.filter, retry=rule.retry)


def unlink(trigger: Trigger, key: str) -> Trigger | None:
    """`trigger` without rule `key`; None when it does not list it.

    The map stays (possibly empty) once a rule has been linked, as OpenWhisk's `removeRule` leaves it.
    """
    if link_of(trigger, key) is None:
        return None
    assert trigger.rules is not UNSET  # link_of found the key
    rules = {k: v for k, v in trigger.rules.items() if k != key}
    return msgspec.structs.replace(trigger, rules=rules)


def active_rules(trigger: Trigger) -> dict[str, ReducedRule]:
    """The rules a fire of `trigger` runs: those its map lists as active (for the rule engine)."""
    if trigger.rules is UNSET:
        return {}
    return {k: v for k, v in trigger.rules.items() if v.status == RULE_ACTIVE}


def parse_status(value: object) -> str:
    """The status a `POST …/rules/{name}` body asks for; anything but active/inactive is a 400.

    The messages follow OpenWhisk's, which come from its body unmarshaller.
    """
    if value is None:
        raise BadRequest("The request content was malformed:\nkey not found: status")
    if not isinstance(value, str) or value not in STATUSES:
        shown = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        raise BadRequest(
            f"The request content was malformed:\nrequirement failed: {shown} is not a recognized rule state"
        )
    return value
