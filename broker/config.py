"""The one settings object: every `SQUALL_*` variable is read here and nowhere else."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from broker.errors import BadRequest
from broker.key_seal import decode_secret
from broker.limits import (
    CONCURRENT_INVOCATIONS,
    DEADLETTERS_PER_NAMESPACE,
    ENTITIES_PER_NAMESPACE,
    FIRES_PER_MINUTE,
    INVOCATIONS_PER_MINUTE,
)

_SYNC_INTERVAL = re.compile(r"always|[0-9]+(ms|s|m|h)")

# OpenWhisk standalone's well-known development key for `guest` (ansible/files/auth.guest).
GUEST_NAMESPACE = "guest"
GUEST_KEY = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)


SYSTEM_NAMESPACE = "whisk.system"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a role needs to know about its surroundings."""

    # Where the backbone lives. Empty means "start an embedded one" in standalone mode. A NATS cluster is given
    # as several comma-separated URLs (`nats://a:4222,nats://b:4222`): the client connects to one of them and,
    # should it die, reconnects to another (and learns the rest of the cluster from the servers themselves).
    nats_url: str = ""
    mongodb_uri: str = ""
    mongodb_database: str = "squall"

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 3233
    data_dir: Path = Path("~/.squall")  # expanded by from_env

    # The namespace standalone creates on first boot, and its key ("uuid:secret").
    guest_namespace: str = GUEST_NAMESPACE
    guest_key: str = GUEST_KEY
    # The namespace of the catalog (`/whisk.system/utils/echo`, the feed actions): created at start with a
    # key nobody is shown, so only the installer writes there; its published packages are readable by all.
    system_namespace: str = SYSTEM_NAMESPACE

    # Rootless Podman: the unprivileged user that owns the engine, and its API socket.
    podman_user: str = "squall"
    podman_socket: str = ""  # empty: /run/user/<uid of podman_user>/podman/podman.sock

    # The invoker's container pool: the memory budget its containers' limits must fit in, the stem
    # cells kept prewarmed per runtime family ("python:1,nodejs:1"), and how long an idle one lives.
    pool_memory_mb: int = 2048
    pool_prewarm: str = "python:1,nodejs:1"
    pool_idle_timeout_s: float = 600.0
    # A warm container idle this long is paused (frozen) where the host allows it (OpenWhisk: 10 s); 0: never.
    pool_pause_grace_s: float = 10.0
    # The runtime families this host offers (e.g. "python,nodejs,go"): the images `squall images ensure`
    # builds, and the kinds the invoker advertises in its heartbeat. Empty: every family Squall knows.
    runtimes: str = ""
    # Where the invoker keeps compiled action artefacts (Go, Rust, Java sources), by code hash. Empty:
    # <data_dir>/artefacts.
    artefact_cache_dir: str = ""
    artefact_cache_mb: int = 1024

    # Per-namespace throttles where a namespace's record sets none (OpenWhisk's 60/30/60). Rates count per
    # calendar minute in each API or broker process; activations in flight count across all of them.
    invocations_per_minute: int = INVOCATIONS_PER_MINUTE
    concurrent_invocations: int = CONCURRENT_INVOCATIONS
    fires_per_minute: int = FIRES_PER_MINUTE
    # Anonymous web action requests a namespace's web actions take per minute, per API process (Squall's own
    # bound: OpenWhisk has none beyond invocationsPerMinute, which the runs count against too).
    web_requests_per_minute: int = 600
    # How long a web action request waits for its run before answering 202 "Response not yet ready."
    # (OpenWhisk's controller.activation.max-wait-for-blocking-activation, 60 s).
    web_action_wait_s: float = 60.0

    # How many days activation records are kept where a namespace's limits set no `activationRetentionDays`;
    # the broker's upkeep deletes older ones.
    activation_retention_days: int = 7
    # JetStream retention for the event-history streams.
    stream_max_age_days: int = 7
    # Activation records too large for one NATS message (a log flood up to the 10 MB limit) wait in a
    # JetStream object store until the recorder has them: its bound on the server's disk.
    large_records_max_mb: int = 4096

    # Byte bounds of the backbone's storage (broker/topology.py), sized for a development machine; README
    # § "Bounded storage" gives production values. The history streams (TRIGGERS, ACTIVATIONS) drop their
    # oldest messages when full; the INVOKE work queue refuses new runs (503) rather than lose queued ones.
    triggers_max_mb: int = 1024
    invoke_max_mb: int = 1024
    activations_max_mb: int = 2048
    deadletters_max_mb: int = 256
    entities_max_mb: int = 512  # the entities KV bucket (bodies up to 256 KB; larger ones are blobs)
    blobs_max_mb: int = 4096  # action code too large for a KV value
    records_max_mb: int = 64  # each small KV bucket: namespaces, keys, invokers, feeds, feed status
    # Dead letters wait for a human, but not forever: older ones are dropped.
    deadletter_max_age_days: int = 14
    # Per-namespace quotas where a namespace's record sets none: actions + triggers + rules + packages (a
    # create past it is a 403), and dead letters (past it the oldest of the namespace are dropped: a letter
    # is written by the platform when a run fails for good, with no client to refuse, and the newest failures
    # are the ones a human still acts on).
    entities_per_namespace: int = ENTITIES_PER_NAMESPACE
    deadletters_per_namespace: int = DEADLETTERS_PER_NAMESPACE
    # The memory each in-process cache (keys, entities) may hold, in MB of the values' encoded size.
    cache_max_mb: int = 64

    # The embedded nats-server's JetStream fsync policy: "" = nats-server's default (every 2 minutes;
    # acknowledged messages survive a crash of the process, not a power cut), "always" = before every
    # acknowledgement (see bench/README.md for its cost), or an interval such as "1s".
    nats_sync: str = ""

    # Loop protection: an event caused by this many action-caused events in a row is refused.
    max_hops: int = 10
    # How long a broker consumer (rule engine, recorder) may hold a message unacknowledged before JetStream
    # hands it to another replica: the delay before the work of a crashed broker is picked up again.
    broker_ack_wait_s: float = 10.0
    # How long an invoker may hold an invocation without a sign of life before another invoker gets it
    # (OpenWhisk's controller marks an invoker offline after 10 s without a ping).
    invoker_ack_wait_s: float = 10.0
    # Copies of every stream, bucket and object store: 1 on one server, 3 on a NATS cluster.
    replicas: int = 1

    # How long an event-driven run (rule-fired) may wait for its namespace's capacity (concurrentInvocations,
    # invocationsPerMinute) before it is dead-lettered as "throttled" instead (EventBridge retries for 24 h).
    max_queue_wait_s: float = 86400.0

    # Feeds: an alarm whose instants were missed while no feeds process ran fires the last one ("last") or none
    # ("none"); instants missed for less than `feeds_takeover_s` (a feeds process died and another took its
    # alarms over) are all fired, their idempotency keys making any already fired a no-op.
    feeds_missed_ticks: str = "last"
    feeds_takeover_s: float = 10.0
    # Webhooks: the URL senders reach the API at (behind a proxy or load balancer), empty: `api_url`; and how
    # long a delivery id is remembered so that a sender's retry of it fires nothing (Stripe retries for 3 days).
    webhook_base_url: str = ""
    webhook_replay_window_s: float = 3 * 86400.0
    # The EVENTS stream (`events.<ns>.…`, what NATS-subject feeds fire on): kept this long, and at most this big
    # (the oldest messages go first).
    events_max_age_hours: float = 24.0
    events_max_mb: int = 1024

    # Live activation streams (GET …/activations/stream): a comment line this often keeps proxies from closing
    # an idle one; at most this many open per namespace in each API process (429 past it); a client that takes
    # nothing for `stream_stall_s` while records wait for it is cut off, with the position to resume from; each
    # stream holds at most `stream_window` records for its client.
    stream_heartbeat_s: float = 15.0
    streams_per_namespace: int = 20
    stream_stall_s: float = 10.0
    stream_window: int = 64
    # A feeds process not heard from for this long is dead: its alarms go to the others (feeds/membership.py).
    feeds_member_timeout_s: float = 3.0
    # How often the alarms' statuses (last and next fire, count) are written: one write per alarm per period,
    # not one per fire. A takeover fires again whatever a stale lastFire hides (as no-ops), so it may lag.
    feeds_status_flush_s: float = 5.0

    # The key that seals callers' API keys inside invocations (broker/key_seal.py): 32 random bytes, base64url,
    # the same for every API and invoker. `squall standalone` and `squall serve` without one use the data
    # dir's `invocation.secret` (made once, mode 0600). Empty: no key is passed to actions at all.
    invocation_secret: str = ""

    # An OpenTelemetry collector's OTLP/HTTP address (e.g. http://127.0.0.1:4318): the broker role then exports
    # every traced activation record as a span (broker/otlp_export.py). Empty: no export, no SDK loaded.
    otlp_endpoint: str = ""

    # `squall standalone`'s role processes (squall/supervisor.py). API workers and brokers: 0 sizes them from the
    # cores this process may use (API: one per core; brokers: one per two cores); invokers and feeds processes:
    # how many (an invoker per host is the norm: each sizes its pool from `pool_memory_mb`). `single_process`
    # runs every role in one event loop instead, for debugging.
    api_workers: int = 0
    brokers: int = 0
    invokers: int = 1
    feeds_workers: int = 1
    single_process: bool = False
    # The event loop of role processes: "uvloop" (libuv's, where installed: bench/README.md) or "asyncio".
    event_loop: str = "uvloop"

    # How long a role may take to drain on shutdown.
    drain_timeout_s: float = 5.0
    log_level: str = "info"
    # "text" (human-readable) or "json": one JSON object per line with role, namespace, activation and trace id.
    log_format: str = "text"

    # Observability (README § "Metrics and tracing"). `metrics`: count into Prometheus metrics, served at
    # GET /metrics. `metrics_dir`: where role processes on one host share their metrics (prometheus-client's
    # multiprocess mode); empty: each process counts in memory, which suffices while all roles share one.
    # `metrics_namespaces`: label per-namespace series with the namespace (bounded only by the tenants).
    metrics: bool = True
    metrics_dir: str = ""
    metrics_namespaces: bool = False
    # W3C trace context: a fire, invoke or webhook carries one (or is given one) through every record it causes.
    trace_context: bool = True

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', not {self.log_format!r}")
        if self.feeds_missed_ticks not in ("last", "none"):
            raise ValueError(f"feeds_missed_ticks must be 'last' or 'none', not {self.feeds_missed_ticks!r}")
        if self.invocation_secret:
            decode_secret(self.invocation_secret)  # ValueError, as the other settings say theirs
        if self.event_loop not in ("uvloop", "asyncio"):
            raise ValueError(f"event_loop must be 'uvloop' or 'asyncio', not {self.event_loop!r}")
        counts = (self.api_workers, self.brokers, self.invokers, self.feeds_workers)
        if min(counts) < 0:
            raise ValueError("api_workers, brokers, invokers and feeds_workers must not be negative")
        if self.nats_sync and not _SYNC_INTERVAL.fullmatch(self.nats_sync):
            raise ValueError(
                f"nats_sync must be empty, 'always' or a duration like '1s', not {self.nats_sync!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `SQUALL_<FIELD>` variables, then apply explicit overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(f"SQUALL_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = msgspec.convert(values, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid setting: {exc}") from None
        return msgspec.structs.replace(settings, data_dir=settings.data_dir.expanduser())

    def to_env(self) -> dict[str, str]:
        """These settings as the `SQUALL_*` variables `from_env` reads back: how a supervisor hands its own to
        the role processes it starts (secrets included: a process's environment is readable by its owner
        alone, unlike its command line). An empty string reads back as the field's default."""
        env = {}
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            env[f"SQUALL_{field.name.upper()}"] = text
        return env

    @property
    def api_url(self) -> str:
        """Where the API is reached, `http://host:port`: what actions get as `__OW_API_HOST`."""
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def nats_servers(self) -> list[str]:
        """`nats_url` as the list of servers it names (one, or a cluster's several)."""
        return nats_servers(self.nats_url)

    @property
    def webhook_url(self) -> str:
        """Where webhook senders reach the API."""
        return self.webhook_base_url.rstrip("/") or self.api_url

    def with_backbone(self, nats_url: str, mongodb_uri: str) -> Settings:
        """The same settings pointing at the servers actually in use (e.g. embedded ones)."""
        return msgspec.structs.replace(self, nats_url=nats_url, mongodb_uri=mongodb_uri)


def nats_servers(url: str) -> list[str]:
    """The servers of a comma-separated NATS URL list, blanks dropped."""
    return [part.strip() for part in url.split(",") if part.strip()]


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(f"cannot convert {value!r} to {type_}")
