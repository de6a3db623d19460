"""What the invoker asks of the container pool, and what the pool reports back about one run."""

from __future__ import annotations

from typing import Any

import msgspec


class InitPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The `value` of OpenWhisk's `POST /init`."""

    name: str
    main: str = "main"
    code: str = ""
    binary: bool = False
    env: dict[str, str] = {}


class RunPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The body of OpenWhisk's `POST /run` (`deadline` is epoch ms as a string, as OpenWhisk sends it)."""

    value: Any
    namespace: str
    action_name: str
    action_version: str
    activation_id: str
    transaction_id: str
    deadline: str
    api_key: str | None = None
    # W3C trace context of the run: actions see them as __OW_TRACE_ID and __OW_TRACEPARENT (the runtimes
    # export every field of this body that way), to pass on to what they call.
    trace_id: str | None = None
    traceparent: str | None = None


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One run for the pool: which warm container may serve it, the limits, and the two protocol bodies."""

    pool_key: str  # warm containers are shared only between runs with the same key: "ns/[pkg/]name@rev"
    kind: str  # a concrete kind from broker/kinds.py, e.g. "python:3.11"
    memory_mb: int
    timeout_ms: int
    log_limit_bytes: int
    init: InitPayload
    run: RunPayload
    network: bool = False  # egress opt-in; refused where the host cannot provide it


class RunOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What happened, in raw terms; the invoker turns it into an OpenWhisk activation record."""

    start: int  # epoch ms when the run (or the init of a cold start) began
    end: int  # epoch ms
    cold: bool  # a new container or a stem cell had to be initialized for this run
    init_ms: int | None = None  # time spent in /init, cold starts only
    wait_ms: int = 0  # time queued in the pool waiting for capacity
    init_status: int | None = None  # /init's HTTP status when init failed, else None
    init_body: bytes = b""
    status: int | None = None  # /run's HTTP status; None when the container gave no reply
    body: bytes = b""  # /run's raw reply body
    timed_out: bool = False
    timed_out_in_init: bool = False
    crashed: bool = False  # the container died or dropped the connection
    logs: list[str] = []  # OpenWhisk-formatted lines: "<ISO time> stdout: msg"
    logs_truncated: bool = False
    container: str = ""  # id, for diagnostics
