"""Dead letters (a Squall addition): rule-fired runs that failed for good, kept on DEADLETTER until redriven.

A run with a retry policy that still fails on its last attempt (or fails with a status its policy does not
retry) becomes one `DeadLetter` at `deadletter.<ns>.<id>`, where `id` is its first attempt's activation id
and the msg id is `dl-<id>`, so the invoker re-publishing it after a crash stores nothing new. A letter waits
until someone redrives, deletes or purges it, or until it ages out (SQUALL_DEADLETTER_MAX_AGE_DAYS); a namespace
keeps at most its `maxDeadLetters`, past which its oldest letters are dropped (the platform writes a letter when
a run fails for good: there is no client to refuse, and the newest failures are the ones still worth acting on).
"""

from __future__ import annotations

import asyncio
import builtins
import re
from typing import Any, Final, Literal

import msgspec

from broker import codec, metrics, subjects
from broker.activations import SUCCESS, Activation
from broker.bus import JetStreamBus
from broker.entity_store import EntityStore
from broker.errors import BadRequest, InternalError, NotFound
from broker.invocations import Invocation
from broker.queues import InvokeQueues, subject_of
from broker.retry_policy import RetryPolicy, should_retry
from broker.trigger_events import attempt_activation_id

# A redrive's activation id is derived from the letter's id with an attempt number no retry policy reaches,
# so a repeated redrive request publishes the same invocation again (JetStream's duplicate window drops it).
REDRIVE_ATTEMPT: Final = 1001
# The error text kept in a letter: enough to see what went wrong; the attempt's record has all of it.
REASON_MAX_CHARS: Final = 4096
_LETTER_ID = re.compile(r"[0-9a-f]{32}")

Verdict = Literal["done", "retry", "dead-letter"]


class FailureReason(msgspec.Struct, frozen=True, kw_only=True):
    """Why the last attempt failed: its record's `response.status` and the `error` of its result."""

    status: str
    error: str


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run that failed for good, with what it takes to run it again (`invocation`)."""

    id: str  # the first attempt's activation id
    namespace: str  # where the activation records are (the invoking namespace)
    action: str  # "ns/[pkg/]name"
    rule: str | None = None  # "ns/rule"
    trigger: str | None = None  # "ns/trigger"
    cause: str | None = None  # the trigger activation id
    reason: FailureReason
    attempts: int
    activationIds: list[str]  # of every attempt, first to last
    invocation: Invocation  # as first published: a redrive republishes it under a new activation id
    firstFailed: int  # epoch ms; see `dead_letter` for how exact it is
    lastFailed: int  # epoch ms
    paramsDropped: bool = False  # the parameters did not fit in a NATS message beside the rest


class LetterRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one letter is in the stream (an index entry of a listing)."""

    seq: int
    subject: str


# -- pure decisions ---------------------------------------------------------------------------------------


def after_attempt(policy: RetryPolicy | None, status: str, attempt: int) -> Verdict:
    """What follows attempt number `attempt` (1-based) that ended in `status`.

    Without a policy nothing follows (OpenWhisk's semantics: the failed record is all). With one, a failure
    is retried while the policy says so; a failure that is not retried, whether its attempts are spent or its
    status is not in `on`, is dead-lettered: the policy is how a rule asks that no failure go unnoticed.
    """
    if policy is None or status == SUCCESS:
        return "done"
    return "retry" if should_retry(policy, status, attempt) else "dead-letter"


def attempt_ids(first_id: str, attempts: int) -> list[str]:
    return [attempt_activation_id(first_id, n) for n in range(1, max(1, attempts) + 1)]


def failure_reason(record: Activation) -> FailureReason:
    result = record.response.result
    error: Any = result.get("error") if isinstance(result, dict) else result
    text = error if isinstance(error, str) else codec.encode(error).decode()
    return FailureReason(status=record.response.status, error=text[:REASON_MAX_CHARS])


def dead_letter(invocation: Invocation, record: Activation, attempts: int, first_failed: int) -> DeadLetter:
    """The letter of `invocation` (as first published), whose attempt number `attempts` ended in `record`.

    The invoker learns of earlier attempts only through the redelivery count, so `first_failed` is what it
    can know: the end of the first attempt when that is the last one, else when the invocation was queued.
    """
    last_failed = record.end or record.start
    return DeadLetter(
        id=invocation.activationId,
        namespace=invocation.namespace,
        action=invocation.action,
        rule=invocation.rule,
        trigger=invocation.trigger,
        cause=invocation.cause,
        reason=failure_reason(record),
        attempts=attempts,
        activationIds=attempt_ids(invocation.activationId, attempts),
        invocation=invocation,
        firstFailed=min(first_failed, last_failed),
        lastFailed=last_failed,
    )


def fit(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """A letter small enough for one NATS message: the parameters go first, and the letter says so."""
    if len(codec.encode(letter)) <= max_bytes:
        return letter
    return msgspec.structs.replace(
        letter, invocation=msgspec.structs.replace(letter.invocation, params={}), paramsDropped=True
    )


def redrive_id(letter_id: str) -> str:
    return attempt_activation_id(letter_id, REDRIVE_ATTEMPT)


def redrive_invocation(letter: DeadLetter, now: int) -> Invocation:
    """The invocation a redrive publishes: the original one, with a new activation id and acceptance time (and no
    longer deferred to a minute that has passed)."""
    return msgspec.structs.replace(
        letter.invocation, activationId=redrive_id(letter.id), published=now, not_before=None
    )


def public(letter: DeadLetter) -> DeadLetter:
    """A letter as the API shows it: without the caller's API key that the invocation may carry (sealed: no
    use to anyone without the invocation secret, but no business of a listing either)."""
    if letter.invocation.sealed_api_key is None:
        return letter
    return msgspec.structs.replace(
        letter, invocation=msgspec.structs.replace(letter.invocation, sealed_api_key=None)
    )


def validate_letter_id(value: str) -> str:
    if not _LETTER_ID.fullmatch(value):
        raise BadRequest(
            f"The dead letter id '{value[:64]}' is not valid: it must be 32 lowercase hexadecimal characters."
        )
    return value


def msg_id(letter_id: str) -> str:
    return f"dl-{letter_id}"


def namespace_filter(namespace: str) -> str:
    """Every letter of one namespace: `deadletter.<ns>.*`."""
    return subjects.deadletter_subject(namespace)


# -- the stream ------------------------------------------------------------------------------------------


class DeadLetters:
    """The DEADLETTER stream of a bus: publish, list, read, delete, purge and redrive letters."""

    def __init__(self, bus: JetStreamBus, queues: InvokeQueues | None = None) -> None:
        self.bus = bus
        self.queues = queues or InvokeQueues(bus, bus.settings)

    async def publish(self, letter: DeadLetter) -> None:
        subject = subjects.deadletter_subject(letter.namespace, letter.id)
        await self.bus.publish_until_stored(subject, self.bus.encode(letter, shrink=fit), msg_id(letter.id))
        metrics.current().dead_letters(reason_label(letter.reason.status), namespace=letter.namespace).inc()
        await self._keep_quota(letter.namespace)

    async def quota(self, namespace: str) -> int:
        """How many letters `namespace` keeps: its record's `maxDeadLetters`, else the system setting."""
        try:
            found = (await EntityStore(self.bus).get_namespace(namespace)).limits.maxDeadLetters
        except NotFound:
            found = None
        return self.bus.settings.deadletters_per_namespace if found is None else found

    async def _keep_quota(self, namespace: str) -> None:
        """Drop the namespace's oldest letters past its quota (counted first: the common case reads no index)."""
        limit = await self.quota(namespace)
        if await self.count(namespace) <= limit:
            return
        for ref in oldest_past(await self._index(namespace), limit):
            await self._purge(ref.subject)

    async def get(self, namespace: str, letter_id: str) -> DeadLetter:
        subject = subjects.deadletter_subject(namespace, validate_letter_id(letter_id))
        return _decode(await self.bus.last_message(subjects.DEADLETTER_STREAM, subject), subject)

    async def list(self, namespace: str, *, skip: int = 0, limit: int = 30) -> builtins.list[DeadLetter]:
        """A namespace's letters, newest first."""
        refs = sorted(await self._index(namespace), key=lambda r: r.seq, reverse=True)
        page = refs[skip : skip + limit]
        letters = await asyncio.gather(*(self._read(ref) for ref in page))
        return [letter for letter in letters if letter is not None]  # None: deleted meanwhile

    async def count(self, namespace: str) -> int:
        _, per_letter = await self.bus.count(subjects.DEADLETTER_STREAM, namespace_filter(namespace))
        return len(per_letter)

    async def delete(self, namespace: str, letter_id: str) -> DeadLetter:
        """Remove one letter; answers it as it was."""
        letter = await self.get(namespace, letter_id)
        await self._purge(subjects.deadletter_subject(namespace, letter_id))
        return letter

    async def purge(self, namespace: str) -> int:
        """Remove every letter of a namespace; answers how many there were. A letter that arrives while this
        runs is kept: the purge stops at the last one it counted."""
        refs = await self._index(namespace)
        if refs:
            await self._purge(namespace_filter(namespace), upto=max(r.seq for r in refs))
        return len(refs)

    async def redrive(self, namespace: str, letter_id: str, now: int) -> str:
        """Publish the letter's invocation again under a new activation id, then drop the letter.

        The letter goes only once the invocation is stored, and the new id is derived from the letter's, so
        a redrive that fails half-way can simply be repeated.
        """
        letter = await self.get(namespace, letter_id)
        invocation = redrive_invocation(letter, now)
        await self.queues.ensure(invocation.namespace)
        await self.bus.publish(
            subject_of(invocation), codec.encode(invocation), msg_id=invocation.activationId
        )
        await self._purge(subjects.deadletter_subject(namespace, letter_id))
        return invocation.activationId

    # -- reading the stream ------------------------------------------------------------------------------

    async def _read(self, ref: LetterRef) -> DeadLetter | None:
        try:
            data = await self.bus.message(subjects.DEADLETTER_STREAM, ref.seq)
        except NotFound:
            return None
        return _decode(data, ref.subject)

    async def _index(self, namespace: str) -> builtins.list[LetterRef]:
        """Where each letter of a namespace is, read in one consumer pass over headers only: a listing
        decodes just the page it answers."""
        found = await self.bus.last_per_subject(
            subjects.DEADLETTER_STREAM, namespace_filter(namespace), headers_only=True
        )
        return [LetterRef(seq=msg.metadata.sequence.stream, subject=msg.subject) for msg in found]

    async def _purge(self, subject: str, upto: int | None = None) -> None:
        await self.bus.purge(subjects.DEADLETTER_STREAM, subject, upto)


def oldest_past(refs: builtins.list[LetterRef], limit: int) -> builtins.list[LetterRef]:
    """The letters to drop so that `limit` remain: the oldest (lowest stream sequence) first."""
    excess = len(refs) - max(0, limit)
    return sorted(refs, key=lambda r: r.seq)[:excess] if excess > 0 else []


def _decode(data: bytes | None, subject: str) -> DeadLetter:
    try:
        return codec.decode(data or b"", DeadLetter)
    except BadRequest as exc:
        raise InternalError(f"unreadable dead letter at {subject}: {exc.message}") from None


def reason_label(status: str) -> str:
    """A letter's reason as a bounded label value: `throttled`, or the failed run's status."""
    return "throttled" if status == "throttled" else metrics.status_label(status)
