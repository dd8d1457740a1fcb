"""Metrics (Prometheus) and traces (OpenTelemetry) for the pools.

Counters and histograms move as things happen (the manager calls the `on_*` hooks); gauges
are read from the live pools at scrape time by a collector, so they are never stale. Labels
are pool names, task types, statuses and strategies: bounded sets, never a task id.
`METRICS` lists every family; specs/metrics.md is generated from it and tested against the
live endpoint.

Traces: one span per task, from submission to its end (pool, task type, status), and one per
routing decision. A task's trace context travels with its Job, so a peer's MCP call (in
`_meta`) or a Kubernetes Job (in its environment) continues the same trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pools.models import DistributionStrategy, PoolStatus, RoutingStrategy, TaskRecord, TaskState

if TYPE_CHECKING:
    from pools.manager import PoolManager

# Every value a label can take, so each series can be created at 0 before its first event:
# Prometheus' increase() and rate() need a sample before the first increment to count it.
TASK_STATUSES = tuple(s.value for s in TaskState if s.terminal)
ERROR_KINDS = ("task_failed", "timed_out", "worker_died", "pool_fault", "peer_unreachable")
SCALE_DIRECTIONS = ("up", "down")
SCALE_TRIGGERS = ("queue", "idle", "manual", "rebalance")
ROUTING_OUTCOMES = ("chosen", "fallback")
DISTRIBUTION_OUTCOMES = ("complete", "partial")

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter, gauge, histogram
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("mahavishnu_pools", "gauge", ("type", "status"), "Pools by type and status."),
    MetricSpec("mahavishnu_pool_up", "gauge", ("pool", "type"), "1 when the pool is healthy (running or scaling)."),
    MetricSpec("mahavishnu_pool_status", "gauge", ("pool", "status"), "1 for the pool's current status."),
    MetricSpec("mahavishnu_pool_workers", "gauge", ("pool", "state"), "Workers by state: busy, idle, starting."),
    MetricSpec("mahavishnu_pool_capacity", "gauge", ("pool",), "Most workers the pool may run (max_workers)."),
    MetricSpec("mahavishnu_pool_min_workers", "gauge", ("pool",), "Workers the pool keeps when idle."),
    MetricSpec("mahavishnu_pool_utilization", "gauge", ("pool",), "Busy workers / workers (0 with no workers)."),
    MetricSpec("mahavishnu_pool_queue_size", "gauge", ("pool",), "Tasks waiting for a worker."),
    MetricSpec("mahavishnu_pool_in_flight", "gauge", ("pool",), "Tasks running now."),
    MetricSpec("mahavishnu_pool_memory_bytes", "gauge", ("pool",), "Resident memory of the pool's workers."),
    MetricSpec("mahavishnu_pool_cpu_percent", "gauge", ("pool",), "CPU of the pool's workers (100 = one core)."),
    MetricSpec("mahavishnu_worker_memory_bytes", "gauge", ("pool", "worker"), "Resident memory per live worker."),
    MetricSpec("mahavishnu_worker_cpu_percent", "gauge", ("pool", "worker"), "CPU per live worker."),
    MetricSpec("mahavishnu_pool_worker_seconds_total", "counter", ("pool", "type"),
               "Worker-seconds the pool has run (for cost: times a price per worker-second)."),
    MetricSpec("mahavishnu_tasks_submitted_total", "counter", ("pool", "task_type"), "Tasks accepted."),
    MetricSpec("mahavishnu_tasks_total", "counter", ("pool", "task_type", "status"), "Tasks ended, by status."),
    MetricSpec("mahavishnu_task_duration_seconds", "histogram", ("pool", "task_type"), "Run time of ended tasks."),
    MetricSpec("mahavishnu_task_queue_seconds", "histogram", ("pool",), "Time from submission to start."),
    MetricSpec("mahavishnu_routing_decisions_total", "counter", ("strategy", "pool", "outcome"),
               "Pools chosen by routing; outcome chosen or fallback (affinity could not hold)."),
    MetricSpec("mahavishnu_routing_seconds", "histogram", ("strategy",), "Time to choose a pool."),
    MetricSpec("mahavishnu_scaling_events_total", "counter", ("pool", "direction", "trigger"),
               f"Worker count changes: direction {' or '.join(SCALE_DIRECTIONS)}; "
               f"trigger {', '.join(SCALE_TRIGGERS)}."),
    MetricSpec("mahavishnu_errors_total", "counter", ("pool", "kind"),
               f"Errors by kind: {', '.join(ERROR_KINDS)}."),
    MetricSpec("mahavishnu_distributions_total", "counter", ("strategy", "outcome"),
               "distribute calls by strategy; outcome complete or partial."),
)

_ERROR_KIND = {TaskState.FAILED: "task_failed", TaskState.TIMED_OUT: "timed_out"}


class _LiveCollector(Collector):
    """Gauges read from the pools at scrape time."""

    def __init__(self, manager: PoolManager) -> None:
        self.manager = manager
        self._worker_seconds: dict[tuple[str, str], float] = {}
        self._last = time.monotonic()

    def collect(self) -> Iterator[Any]:
        m = self.manager
        if not m.started:
            return
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        g = {s.name: GaugeMetricFamily(s.name, s.help, labels=s.labels) for s in METRICS if s.kind == "gauge"}
        counts: dict[tuple[str, str], int] = {}
        for info in m.list_pools(details=True):
            pool, kind = info.name, info.pool_type.value
            counts[(kind, info.status.value)] = counts.get((kind, info.status.value), 0) + 1
            g["mahavishnu_pool_up"].add_metric([pool, kind], 1.0 if info.status in (
                PoolStatus.RUNNING, PoolStatus.SCALING) else 0.0)
            g["mahavishnu_pool_status"].add_metric([pool, info.status.value], 1.0)
            states = {"busy": 0, "idle": 0, "starting": 0}
            for w in info.worker_details:
                states[w.state] = states.get(w.state, 0) + 1
                if w.memory_mb is not None:
                    g["mahavishnu_worker_memory_bytes"].add_metric([pool, w.worker_id], w.memory_mb * 1e6)
                if w.cpu_percent is not None:
                    g["mahavishnu_worker_cpu_percent"].add_metric([pool, w.worker_id], w.cpu_percent)
            for state, n in states.items():
                g["mahavishnu_pool_workers"].add_metric([pool, state], n)
            g["mahavishnu_pool_capacity"].add_metric([pool], info.max_workers)
            g["mahavishnu_pool_min_workers"].add_metric([pool], info.min_workers)
            g["mahavishnu_pool_utilization"].add_metric([pool], states["busy"] / info.workers if info.workers else 0)
            g["mahavishnu_pool_queue_size"].add_metric([pool], info.metrics.queue_size)
            g["mahavishnu_pool_in_flight"].add_metric([pool], info.metrics.in_flight)
            g["mahavishnu_pool_memory_bytes"].add_metric([pool], (info.metrics.memory_mb or 0) * 1e6)
            g["mahavishnu_pool_cpu_percent"].add_metric([pool], info.metrics.cpu_percent or 0)
            key = (pool, kind)
            self._worker_seconds[key] = self._worker_seconds.get(key, 0.0) + info.workers * elapsed
        for (kind, status), n in sorted(counts.items()):
            g["mahavishnu_pools"].add_metric([kind, status], n)
        yield from g.values()
        seconds = CounterMetricFamily("mahavishnu_pool_worker_seconds", METRICS[13].help, labels=("pool", "type"))
        for (pool, kind), value in self._worker_seconds.items():
            seconds.add_metric([pool, kind], value)
        yield seconds


@dataclass(slots=True)
class _TaskSeries:
    """What every task of one pool and task type updates, its labelled children looked up once."""

    submitted: Any
    duration: Any
    queued: Any
    tasks: dict[str, Any]  # by terminal state
    errors: dict[str, Any]  # by error kind


class Telemetry:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and no panel reads them
        self.registry = CollectorRegistry()
        spec = {s.name: s for s in METRICS}

        def counter(name: str) -> Counter:
            return Counter(name.removesuffix("_total"), spec[name].help, spec[name].labels, registry=self.registry)

        def histogram(name: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, spec[name].help, spec[name].labels, buckets=buckets, registry=self.registry)

        self.submitted = counter("mahavishnu_tasks_submitted_total")
        self.tasks = counter("mahavishnu_tasks_total")
        self.duration = histogram("mahavishnu_task_duration_seconds", DURATION_BUCKETS)
        self.queued = histogram("mahavishnu_task_queue_seconds", DURATION_BUCKETS)
        self.routing = counter("mahavishnu_routing_decisions_total")
        self.routing_seconds = histogram("mahavishnu_routing_seconds", LATENCY_BUCKETS)
        self.scaling = counter("mahavishnu_scaling_events_total")
        self.errors = counter("mahavishnu_errors_total")
        self.distributions = counter("mahavishnu_distributions_total")
        self.tracer = trace.get_tracer("mahavishnu.pools")
        self._spans: dict[str, Span] = {}
        self._traced = False
        # Labelled children, looked up once: .labels() costs microseconds on the per-task path.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._series: dict[tuple[str, str], _TaskSeries] = {}  # by (pool id, task type)
        self._pool_name: Callable[[str], str] = lambda pool_id: pool_id
        self._pools: set[str] = set()
        self._task_types: set[str] = set()
        for strategy in RoutingStrategy:
            self._child(self.routing_seconds, strategy.value)
        for dist in DistributionStrategy:
            for outcome in DISTRIBUTION_OUTCOMES:
                self._child(self.distributions, dist.value, outcome)

    def attach(self, manager: PoolManager) -> None:
        self._pool_name = manager.pool_name
        self.registry.register(_LiveCollector(manager))

    def pool_known(self, pool: str, task_types: list[str] | set[str]) -> None:
        """Create every series a pool can produce, at 0, as soon as the pool exists."""
        self._pools.add(pool)
        for task_type in task_types:
            self._task_types.add(task_type)
            self._pool_and_type(pool, task_type)
        for kind in ERROR_KINDS:
            self._child(self.errors, pool, kind)
        for direction in SCALE_DIRECTIONS:
            for trigger in SCALE_TRIGGERS:
                self._child(self.scaling, pool, direction, trigger)
        for strategy in RoutingStrategy:
            for outcome in ROUTING_OUTCOMES:
                self._child(self.routing, strategy.value, pool, outcome)
        self._child(self.queued, pool)

    def task_type_known(self, task_type: str) -> None:
        """A task type first seen after its pools (a plug-in): its series at 0 on every pool."""
        self._task_types.add(task_type)
        for pool in self._pools:
            self._pool_and_type(pool, task_type)

    def _pool_and_type(self, pool: str, task_type: str) -> None:
        self._child(self.submitted, pool, task_type)
        self._child(self.duration, pool, task_type)
        for status in TASK_STATUSES:
            self._child(self.tasks, pool, task_type, status)

    def _task_series(self, pool_id: str, task_type: str) -> _TaskSeries:
        series = self._series.get((pool_id, task_type))
        if series is None:
            pool = self._pool_name(pool_id)
            if task_type not in self._task_types:
                self.task_type_known(task_type)
            series = self._series[(pool_id, task_type)] = _TaskSeries(
                self._child(self.submitted, pool, task_type), self._child(self.duration, pool, task_type),
                self._child(self.queued, pool), {s: self._child(self.tasks, pool, task_type, s) for s in TASK_STATUSES},
                {k: self._child(self.errors, pool, k) for k in ERROR_KINDS})
        return series

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _tracing(self) -> bool:
        """False until an SDK tracer provider is installed: then spans are not even built."""
        if not self._traced:
            # get_tracer_provider() looks up an environment variable on every call until a provider
            # is set (once, for good); the global it sets says "none yet" without that lookup.
            if getattr(trace, "_TRACER_PROVIDER", True) is None:
                return False
            self._traced = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return self._traced

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- hooks the manager calls ------------------------------------------------------------
    def on_submitted(self, record: TaskRecord) -> dict[str, str]:
        """Count the task, open its span; returns the W3C trace carrier that travels with it."""
        self._task_series(record.pool_id, record.task_type).submitted.inc()
        if not self._tracing():
            return {}
        pool = self._pool_name(record.pool_id)
        span = self.tracer.start_span(f"task {record.task_type}", kind=SpanKind.INTERNAL, attributes={
            "mahavishnu.task.id": record.task_id, "mahavishnu.task.type": record.task_type,
            "mahavishnu.pool.id": record.pool_id, "mahavishnu.pool.name": pool})
        if not span.is_recording():
            return {}
        self._spans[record.task_id] = span
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    def on_started(self, record: TaskRecord) -> None:
        if record.started_at is not None:
            self._task_series(record.pool_id, record.task_type).queued.observe(
                max(0.0, (record.started_at - record.created_at).total_seconds()))

    def on_finished(self, record: TaskRecord) -> None:
        series = self._task_series(record.pool_id, record.task_type)
        series.tasks[record.state.value].inc()
        if record.duration_s is not None:
            series.duration.observe(record.duration_s)
        kind = "pool_fault" if record.pool_fault and record.state is not TaskState.COMPLETED else \
            _ERROR_KIND.get(record.state)
        if kind:
            series.errors[kind].inc()
        span = self._spans.pop(record.task_id, None)
        if span is not None:
            span.set_attribute("mahavishnu.task.status", record.state.value)
            if record.worker_id:
                span.set_attribute("mahavishnu.worker.id", record.worker_id)
            if record.state is not TaskState.COMPLETED:
                span.set_status(Status(StatusCode.ERROR, (record.error or record.state.value)[:200]))
            span.end()

    def on_routed(self, strategy: str, pool_name: str, fallback: bool, seconds: float, pool_id: str,
                  reason: str) -> None:
        self._child(self.routing, strategy, pool_name, "fallback" if fallback else "chosen").inc()
        self._child(self.routing_seconds, strategy).observe(seconds)
        if not self._tracing():
            return
        with self.tracer.start_as_current_span("route", attributes={
                "mahavishnu.routing.strategy": strategy, "mahavishnu.pool.name": pool_name,
                "mahavishnu.pool.id": pool_id, "mahavishnu.routing.reason": reason,
                "mahavishnu.routing.fallback": fallback}):
            pass

    def on_pool_event(self, pool_id: str, kind: str, data: dict[str, Any]) -> None:
        pool = self._pool_name(pool_id)
        if kind == "pool_scaled":
            self._child(self.scaling, pool, str(data.get("direction")), str(data.get("trigger"))).inc()
        elif kind == "worker_died":
            self._child(self.errors, pool, "worker_died").inc()
        elif kind == "pool_failed_work":
            self._child(self.errors, pool, "peer_unreachable").inc()

    def on_distributed(self, strategy: str, failed: int) -> None:
        self._child(self.distributions, strategy, "partial" if failed else "complete").inc()
