"""The invocation message: what the API (or the rule engine) puts on the INVOKE stream for an invoker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from broker.entities import KeyValue
from broker.params import annotation_truthy
from broker.retry_policy import RetryPolicy

# Where a waiting API wants the activation record sent (a core NATS subject), as a header of the invocation.
RESULT_HEADER: Final = "Squall-Result-To"
# The action annotation that lets an action see its caller's key as __OW_API_KEY.
PROVIDE_API_KEY: Final = "provide-api-key"


def provides_api_key(annotations: Iterable[KeyValue]) -> bool:
    """Whether an action asks for its caller's key (`provide-api-key`: true when absent, as OpenWhisk reads it;
    new actions are created with it false)."""
    return annotation_truthy(annotations, PROVIDE_API_KEY, absent=True)


def hands_api_key(annotations: Iterable[KeyValue], owner: str, caller: str) -> bool:
    """Whether an action owned by namespace `owner` gets the key of a caller of namespace `caller`: it asks for
    it, and its code is the caller's own. Another namespace's shared action gets none, whatever it asks
    (OpenWhisk hands it the caller's key, with which its owner could then act as the caller)."""
    return owner == caller and provides_api_key(annotations)


class Invocation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One requested run of one action. Its `activationId` is also the JetStream message id, so a
    redelivered or re-published invocation can never become a second activation."""

    activationId: str
    namespace: str  # the invoking subject's namespace: where the activation record belongs
    action: str  # the resolved action, fully qualified without the leading slash: "ns/[pkg/]name"
    params: dict[str, Any] = {}  # already merged: package < binding < action < payload
    blocking: bool = False
    subject: str = ""  # the key uuid of the caller (OpenWhisk's activation `subject`)
    # The caller's key sealed for the invoker (broker/key_seal.py), for an action of its own annotated
    # provide-api-key, or a sequence (whose components each decide); never the key itself.
    sealed_api_key: str | None = None
    transaction_id: str = ""
    cause: str | None = None  # the enclosing sequence's (or trigger's) activation id
    binding: str | None = None  # "ns/binding" when invoked through a package binding
    hops: int = 0  # events caused by actions carry a hop count (loop protection)
    published: int = 0  # epoch ms when accepted; the activation's waitTime is measured from here
    # Rule-fired invocations only: which rule and trigger caused the run, and how failures are retried.
    rule: str | None = None  # "ns/rule"
    trigger: str | None = None  # "ns/trigger"
    retry: RetryPolicy | None = None
    # A run deferred by its namespace's invocationsPerMinute: not started before this epoch ms (the minute
    # with room for it), but waiting in its namespace's queue meanwhile.
    not_before: int | None = None
    traceparent: str = ""  # W3C trace context (broker/trace_context.py); "" with tracing off

    @property
    def event_driven(self) -> bool:
        """Caused by an event (a rule), not by a caller waiting on HTTP: it waits for capacity, never refused."""
        return self.rule is not None
