"""How one run becomes an OpenWhisk activation record: statuses, messages, annotations, logs (pure)."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from broker import trace_context
from broker.activations import (
    APPLICATION_ERROR,
    DEVELOPER_ERROR,
    INTERNAL_ERROR,
    SUCCESS,
    Activation,
    ActivationResponse,
    log_time,
    make_response,
)
from broker.entities import Action, ActionLimits, KeyValue
from broker.invocations import Invocation
from broker.limits import MB, RESULT_MAX_BYTES, nested_deeper_than, nesting_message
from runtimes.contract import RunOutcome

# OpenWhisk's words (common/scala/.../http/ErrorResponse.scala, object Messages).
ABNORMAL_INITIALIZATION: Final = "The action did not initialize and exited unexpectedly."
ABNORMAL_RUN: Final = "The action did not produce a valid response and exited unexpectedly."
MEMORY_EXHAUSTED: Final = "The action exhausted its memory and was aborted."
ACTION_REMOVED: Final = "Action could not be found or may have been deleted."
ACTION_FETCH_ERROR: Final = "Action could not be fetched."
RESOURCE_PROVISION_ERROR: Final = "Failed to provision resources to run the action."
# Messages.logWarningDeveloperError: OpenWhisk ends the logs of every developer error with it, because it stops
# waiting for the log sentinels of a container that failed and so cannot know it has every line.
DEVELOPER_ERROR_WARNING: Final = (
    "The action did not initialize or run as expected. Log data might be missing."
)

ERROR_FIELD: Final = "error"
SEQUENCE_KIND: Final = "sequence"


def invalid_init_response(body: str) -> str:
    return "The action failed during initialization" + (f": {body}" if body else ".")


def invalid_run_response(body: str) -> str:
    return "The action did not produce a valid JSON response" + (f": {body}" if body else ".")


def truncated_response(prefix: str, length: int, limit: int) -> str:
    return (
        f"The action produced a response that exceeded the allowed length: {length} > {limit} bytes. "
        f"The truncated response was: {prefix}"
    )


def timed_out(timeout_ms: int, during_init: bool) -> str:
    tail = " during initialization." if during_init else "."
    return f"The action exceeded its time limits of {timeout_ms} milliseconds{tail}"


TRUNCATION_MARK: Final = "Logs were truncated because"


def logs_truncated(limit_bytes: int) -> str:
    return f"Logs were truncated because the total bytes size exceeds the limit of {limit_bytes} bytes."


def error_response(status: str, message: Any, size: int | None = None) -> ActivationResponse:
    """OpenWhisk's error responses all carry `{"error": …}` as their result."""
    return make_response(status, {ERROR_FIELD: message}, size)


_UNPARSABLE: Final = object()


def _parse(body: bytes) -> Any:
    """The body as JSON, or the sentinel `_UNPARSABLE`."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _UNPARSABLE  # nested past the decoder's depth too: one developer error, not a crashed run


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def init_failed(outcome: RunOutcome) -> bool:
    """Whether the run ended inside `/init` (a failed, timed-out or crashed initialization)."""
    if outcome.timed_out:
        return outcome.timed_out_in_init
    if outcome.init_status is not None:
        return True
    # A cold start whose container died before /init finished has no init time to report.
    return outcome.crashed and outcome.cold and outcome.init_ms is None


def init_response(outcome: RunOutcome) -> ActivationResponse:
    """OpenWhisk's `processInitResponseContent`: every failed init is the developer's error."""
    if outcome.init_status is None:
        return error_response(DEVELOPER_ERROR, ABNORMAL_INITIALIZATION)
    text = _text(outcome.init_body)
    parsed = _parse(outcome.init_body)
    if isinstance(parsed, dict):
        return error_response(
            DEVELOPER_ERROR, parsed.get(ERROR_FIELD, invalid_init_response(text)), len(text)
        )
    return error_response(DEVELOPER_ERROR, invalid_init_response(text), len(text))


def run_response(outcome: RunOutcome, result_limit: int = RESULT_MAX_BYTES) -> ActivationResponse:
    """OpenWhisk's `processRunResponseContent`, with array results (OpenWhisk ≥ 2022) accepted."""
    if outcome.status is None:
        return error_response(DEVELOPER_ERROR, ABNORMAL_RUN)
    body = outcome.body
    if len(body) > result_limit:
        # OpenWhisk quotes the reply up to the limit (its container client reads no further); the record may
        # then pass one NATS message, which broker/large_records.py carries.
        prefix = body[:result_limit].decode("utf-8", errors="ignore")
        return error_response(
            APPLICATION_ERROR, truncated_response(prefix, len(body), result_limit), len(body)
        )
    text = _text(body)
    size = len(text)
    parsed = _parse(body)
    ok = outcome.status == 200
    if isinstance(parsed, dict | list) and nested_deeper_than(parsed, raw=body):
        # Its record could not be stored (MongoDB's nesting limit): one developer error, not a failed write.
        return error_response(
            DEVELOPER_ERROR, f"{invalid_run_response('')} {nesting_message()}".strip(), size
        )
    if isinstance(parsed, dict):
        error = parsed.get(ERROR_FIELD)
        if not ok:
            # A non-200 reply is the container's failure, told in its own `error` when it has one.
            return error_response(
                DEVELOPER_ERROR, error if error is not None else invalid_run_response(text), size
            )
        if ERROR_FIELD in parsed:
            return error_response(APPLICATION_ERROR, error, size)
        return make_response(SUCCESS, parsed, size)
    if isinstance(parsed, list) and ok:
        return make_response(SUCCESS, parsed, size)
    return error_response(DEVELOPER_ERROR, invalid_run_response(text), size)


def outcome_response(
    outcome: RunOutcome, timeout_ms: int, result_limit: int = RESULT_MAX_BYTES
) -> ActivationResponse:
    """The response of a run: a timeout wins over whatever the container said, then init, then run."""
    if outcome.timed_out:
        return error_response(DEVELOPER_ERROR, timed_out(timeout_ms, outcome.timed_out_in_init))
    if init_failed(outcome):
        return init_response(outcome)
    return run_response(outcome, result_limit)


def final_logs(outcome: RunOutcome, limit_bytes: int, developer_error: bool = False) -> list[str]:
    """The run's log lines, ending with OpenWhisk's truncation notice when the limit cut them, and then with its
    warning when the run was a developer error (a failed init, a crash, a timeout, an invalid response)."""
    logs = list(outcome.logs)
    if outcome.logs_truncated and not (logs and TRUNCATION_MARK in logs[-1]):  # unless the pool said it
        logs.append(f"{log_time(outcome.end)} stderr: {logs_truncated(limit_bytes)}")
    if developer_error:
        logs.append(f"{log_time(outcome.end)} stderr: {DEVELOPER_ERROR_WARNING}")
    return logs


def limits_value(limits: ActionLimits) -> Any:
    """The `limits` annotation: the action's limits as its JSON shows them."""
    return msgspec.to_builtins(limits)


def action_path(action: Action) -> str:
    """`ns/[pkg/]name`, the `path` annotation."""
    return f"{action.namespace}/{action.name}"


def action_record(
    *,
    invocation: Invocation,
    action: Action,
    outcome: RunOutcome,
    caused_by_sequence: bool = False,
    result_limit: int = RESULT_MAX_BYTES,
) -> Activation:
    """The record of one run of a code action, exactly as OpenWhisk's invoker writes it."""
    limits = action.limits
    response = outcome_response(outcome, limits.timeout, result_limit)
    annotations = [
        KeyValue(key="limits", value=limits_value(limits)),
        KeyValue(key="path", value=action_path(action)),
        KeyValue(key="kind", value=action.exec.kind),
        KeyValue(key="timeout", value=outcome.timed_out),
    ]
    if caused_by_sequence:
        annotations.append(KeyValue(key="causedBy", value=SEQUENCE_KIND))
    if outcome.cold and outcome.init_ms is not None:
        annotations.append(KeyValue(key="initTime", value=outcome.init_ms))
    annotations.append(KeyValue(key="waitTime", value=wait_time(invocation, outcome)))
    if invocation.binding:
        annotations.append(KeyValue(key="binding", value=invocation.binding))
    trace_context.annotated(invocation.traceparent, annotations)
    return Activation(
        namespace=invocation.namespace,
        name=action.name,
        subject=invocation.subject,
        activationId=invocation.activationId,
        start=outcome.start,
        end=outcome.end,
        duration=max(0, outcome.end - outcome.start),
        cause=invocation.cause,
        response=response,
        logs=final_logs(outcome, limits.logs * MB, response.status == DEVELOPER_ERROR),
        version=action.version,
        publish=False,
        annotations=annotations,
    )


def wait_time(invocation: Invocation, outcome: RunOutcome) -> int:
    """From acceptance by the API to the start of the init (cold) or of the run (warm)."""
    if not invocation.published:
        return outcome.wait_ms
    return max(0, outcome.start - invocation.published)


def failure_record(
    *,
    invocation: Invocation,
    name: str,
    path: str,
    status: str,
    message: str,
    now: int,
    version: str = "0.0.1",
    kind: str | None = None,
    caused_by_sequence: bool = False,
) -> Activation:
    """A record for an invocation that never reached a container (action gone, no resources, …)."""
    annotations = [KeyValue(key="path", value=path)]
    if kind is not None:
        annotations.append(KeyValue(key="kind", value=kind))
    if caused_by_sequence:
        annotations.append(KeyValue(key="causedBy", value=SEQUENCE_KIND))
    if invocation.published:
        annotations.append(KeyValue(key="waitTime", value=max(0, now - invocation.published)))
    trace_context.annotated(invocation.traceparent, annotations)
    return Activation(
        namespace=invocation.namespace,
        name=name,
        subject=invocation.subject,
        activationId=invocation.activationId,
        start=now,
        end=now,
        duration=0,
        cause=invocation.cause,
        response=error_response(status, message),
        logs=[],
        version=version,
        publish=False,
        annotations=annotations,
    )


def internal_error(invocation: Invocation, *, name: str, path: str, message: str, now: int) -> Activation:
    return failure_record(
        invocation=invocation, name=name, path=path, status=INTERNAL_ERROR, message=message, now=now
    )


def has_error(response: ActivationResponse) -> bool:
    """What stops a sequence: a result object carrying `error` (every non-success response has one)."""
    return isinstance(response.result, dict) and ERROR_FIELD in response.result
