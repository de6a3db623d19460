"""The body of a blocking invoke's answer, shaped as OpenWhisk's controller shapes it (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from broker.activations import Activation, annotation
from broker.kinds import SEQUENCE


def blocking_body(record: Activation, result_only: bool) -> Any:
    """What a blocking invoke answers with its record.

    - `result=true`: the result alone (`{}` when the action left none).
    - An array result: the bare array, with or without `result=true` (OpenWhisk's `Actions.scala` answers a
      `JsArray` result as it is: a record has no room for it).
    - Otherwise the record with `logs: []`: OpenWhisk answers from the invoker's completion message, which it
      sends before it collects the logs, and its own tests assert the empty list. The stored record (`GET
      …/activations/{id}` and `/logs`) has them. A sequence's logs are its component ids, which OpenWhisk's
      controller (the sequence's own runner) answers with.
    """
    result = record.response.result
    if isinstance(result, list):
        return result
    if result_only:
        return {} if result is None else result
    if not record.logs or annotation(record, "kind") == SEQUENCE:
        return record
    return msgspec.structs.replace(record, logs=[])
