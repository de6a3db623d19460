"""Prometheus metrics of every role: their definitions, cheap pre-bound children, and the text exposition.

One `Metrics` object per process (`current()`), configured once by the composition root (`configure`). Roles
sharing one process count in memory; roles in separate processes on one host share a directory
(`SQUALL_METRICS_DIR`, prometheus-client's multiprocess mode) from which whichever process serves `/metrics`
(the API) adds everyone's up. Labels are bounded: statuses, kinds, reasons, streams; never an activation id, and
the namespace only when `SQUALL_METRICS_NAMESPACES` asks for it (its series then grow with the tenants).
With `SQUALL_METRICS=false` every metric is a no-op, so the cost of counting can be measured (bench/observability.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from broker.activations import APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR, SUCCESS
from broker.config import Settings
from broker.errors import BadRequest, NotFound, PayloadTooLarge, SquallError, Throttled, WrongCollection

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# The variable prometheus-client itself reads to find the directory of its multiprocess mode.
_MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from a warm container's few milliseconds to a cold start of a compiled language.
START_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0)
LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_STATUS_LABELS: Final = {
    SUCCESS: "success",
    APPLICATION_ERROR: "application_error",
    DEVELOPER_ERROR: "developer_error",
    INTERNAL_ERROR: "internal_error",
}


def status_label(status: str) -> str:
    """An activation status as a label value: OpenWhisk's four, anything else `internal_error`."""
    return _STATUS_LABELS.get(status, "internal_error")


def refusal_reason(exc: BaseException) -> str:
    """Why a fire was refused, as a bounded label value."""
    if isinstance(exc, Throttled):
        return "throttled"
    if isinstance(exc, NotFound | WrongCollection):
        return "not_found"
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    if isinstance(exc, BadRequest):
        return "bad_request"  # the hop limit (a loop), a malformed request
    if isinstance(exc, SquallError):
        return "unavailable"
    return "error"


class CounterChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class HistogramChild(Protocol):
    def observe(self, amount: float) -> None: ...


class GaugeChild(Protocol):
    def set(self, value: float) -> None: ...


C = TypeVar("C")


class _Null:
    """Every metric with counting switched off: each call does nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass


_NULL: Final = _Null()


class Family(Generic[C]):
    """A metric whose children are bound once per label values: a hot path pays one dict lookup, not
    prometheus-client's label validation and lock. `family(*labels, namespace=…)`; the namespace counts only
    when namespace labels are on."""

    __slots__ = ("_children", "_metric", "_namespaced")

    def __init__(self, metric: Any, namespaced: bool) -> None:
        self._metric = metric
        self._namespaced = namespaced
        self._children: dict[tuple[str, ...], C] = {}

    def __call__(self, *labels: str, namespace: str = "") -> C:
        key = (*labels, namespace) if self._namespaced else labels
        child = self._children.get(key)
        if child is None:
            child = cast(
                C, _NULL if self._metric is None else self._metric.labels(*key) if key else self._metric
            )
            self._children[key] = child
        return child


class Metrics:
    """Every metric Squall exports, by role. Names follow Prometheus' conventions: `squall_` prefix, base
    units (seconds), `_total` for counters (added by the client library)."""

    def __init__(self, *, enabled: bool = True, namespaces: bool = False) -> None:
        self.enabled = enabled
        self.namespaces = namespaces
        self.registry = CollectorRegistry(auto_describe=False)
        ns = ("namespace",) if namespaces else ()
        counter, histogram, gauge = self._counter, self._histogram, self._gauge
        # API and feeds: the one fire path (broker/firing.py).
        self.fires_accepted = counter("squall_fires_accepted", "Trigger fires stored as events.", (), ns)
        self.fires_refused = counter(
            "squall_fires_refused",
            "Trigger fires not stored, by reason (no_rule: no active rule, answered 204).",
            ("reason",),
            ns,
        )
        self.throttled = counter(
            "squall_throttled_requests", "Requests refused (429) by a namespace limit.", ("limit",), ns
        )
        self.webhook_verifications_failed = counter(
            "squall_webhook_verifications_failed", "Webhook deliveries refused by their signature check.", ()
        )
        # Broker: the rule engine, dead letters, the recorder.
        self.rule_runs = counter(
            "squall_rule_runs",
            "Runs planned by rules for trigger events, by result (invoked, failed).",
            ("result",),
        )
        self.rule_filter_skips = counter(
            "squall_rule_filter_skips", "Rules skipped because the event did not match their filter.", ()
        )
        self.dead_letters = counter("squall_dead_letters", "Runs dead-lettered, by reason.", ("reason",), ns)
        self.records_written = counter(
            "squall_activation_records_written", "Activation records written to MongoDB.", ()
        )
        self.recorder_lag = histogram(
            "squall_recorder_lag_seconds",
            "From an activation record's arrival on the ACTIVATIONS stream to its being written to MongoDB.",
            (),
            LAG_BUCKETS,
        )
        # Invoker: runs and the container pool.
        self.invocations = counter(
            "squall_invocations",
            "Activation records published by invokers, by kind and status.",
            ("kind", "status"),
            ns,
        )
        self.activation_duration = histogram(
            "squall_activation_duration_seconds",
            "Duration of activations, by kind.",
            ("kind",),
            DURATION_BUCKETS,
        )
        self.container_starts = counter(
            "squall_container_starts",
            "Runs by how their container was got: cold, prewarm (stem cell), warm.",
            ("start",),
        )
        self.container_start_seconds = histogram(
            "squall_container_start_seconds",
            "From taking a container to its being ready to run (start and /init when cold), by start kind.",
            ("start",),
            START_BUCKETS,
        )
        self.pool_containers = gauge(
            "squall_pool_containers",
            "Containers in invoker pools, by state (busy, warm, paused, prewarm).",
            ("state",),
        )
        self.pool_queued = gauge(
            "squall_pool_queued_runs", "Runs waiting in invoker pools for a container.", ()
        )
        # Feeds.
        self.feed_fires = counter(
            "squall_feed_fires", "Fires made by feeds, by feed (alarm, webhook, nats).", ("feed",)
        )
        self.feed_fire_lag = histogram(
            "squall_feed_fire_lag_seconds",
            "From a feed's event (an alarm's instant, a NATS message's storage) to its fire.",
            ("feed",),
            LAG_BUCKETS,
        )

    def _counter(
        self, name: str, doc: str, labels: Sequence[str], ns: Sequence[str] = ()
    ) -> Family[CounterChild]:
        metric = Counter(name, doc, (*labels, *ns), registry=self.registry) if self.enabled else None
        return Family(metric, bool(ns))

    def _histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Family[HistogramChild]:
        metric = (
            Histogram(name, doc, labels, buckets=buckets, registry=self.registry) if self.enabled else None
        )
        return Family(metric, False)

    def _gauge(self, name: str, doc: str, labels: Sequence[str]) -> Family[GaugeChild]:
        # Summed over the live processes of a host in multiprocess mode: each invoker reports its own pool.
        metric = (
            Gauge(name, doc, labels, registry=self.registry, multiprocess_mode="livesum")
            if self.enabled
            else None
        )
        return Family(metric, False)


class _Process:
    """This process's metrics, and the multiprocess directory it writes to (None: in memory)."""

    metrics: Metrics | None = None
    directory: Path | None = None


_process = _Process()


def current() -> Metrics:
    """This process's metrics (in memory, without namespace labels, until `configure` says otherwise)."""
    if _process.metrics is None:
        _process.metrics = Metrics()
    return _process.metrics


def configure(settings: Settings, *, fresh: bool = False) -> Metrics:
    """Set this process's metrics up from the settings; call before any role starts. With `metrics_dir`, the
    process writes its metrics there; `fresh` (the process that owns the directory: the supervisor or
    `squall standalone`) empties it first, as prometheus-client requires between runs."""
    _process.directory = None
    if settings.metrics and settings.metrics_dir:
        path = Path(settings.metrics_dir).expanduser()
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        # prometheus-client finds the directory only through this variable (also in processes started later).
        os.environ[_MULTIPROC_ENV] = str(path)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        _process.directory = path
    _process.metrics = Metrics(enabled=settings.metrics, namespaces=settings.metrics_namespaces)
    return _process.metrics


def process_exited(pid: int) -> None:
    """A supervisor's note that a role process is gone: its live gauges stop counting."""
    if _process.directory is not None:
        mark_process_dead(pid, str(_process.directory))  # type: ignore[no-untyped-call]


class _Fixed(Collector):
    """Metric families computed before the scrape (from JetStream, asynchronously)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(extra: Iterable[Metric] = ()) -> bytes:
    """The text exposition of every process's metrics (this one's, or the whole directory's), then `extra`."""
    metrics = current()
    if _process.directory is not None:
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=str(_process.directory))  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
    text = generate_latest(registry)
    fixed = CollectorRegistry(auto_describe=False)
    fixed.register(_Fixed(extra))
    return text + generate_latest(fixed)
