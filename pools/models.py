"""Pydantic models: the single source of every pool and task schema."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator


class Model(BaseModel):
    """Base of every model here. Schemas are built on first use, not at import, which keeps
    `mahavishnu --help` fast; TaskRecord opts out (see there)."""

    model_config = ConfigDict(defer_build=True)


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # always fullmatch: `$` admits a trailing newline


class PoolType(StrEnum):
    MAHAVISHNU = "mahavishnu"
    SESSION_BUDDY = "session-buddy"
    KUBERNETES = "kubernetes"


class PoolStatus(StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    RUNNING = "running"
    SCALING = "scaling"
    DEGRADED = "degraded"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def accepts_work(self) -> bool:
        return self in _WORKING


_WORKING = {PoolStatus.PENDING, PoolStatus.INITIALIZING, PoolStatus.RUNNING, PoolStatus.SCALING,
            PoolStatus.DEGRADED}


class TaskState(StrEnum):
    """queued -> running -> completed | failed | cancelled | timed_out.

    A queued task may also end cancelled (dropped from the queue) or failed (its pool
    closed or its owner died); a running task may go back to queued only when the
    process that ran it died and its type is idempotent (reconciliation).
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self not in (TaskState.QUEUED, TaskState.RUNNING)


TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.RUNNING: frozenset(
        {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT, TaskState.QUEUED}
    ),
}


class PoolConfig(Model):
    """What `register` takes. Defaults follow the user documentation."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str = Field(description="Unique pool name: letters, digits, '.', '_' or '-', at most 63 characters.")
    type: PoolType = Field(
        default=PoolType.MAHAVISHNU, validation_alias=AliasChoices("type", "pool_type"),  # outputs say pool_type
        description="Pool type: mahavishnu (local worker processes), session-buddy (a remote MCP peer) or kubernetes.")
    min_workers: int = Field(default=1, ge=0, le=1000, description="Workers kept up when idle.")
    max_workers: int = Field(default=10, ge=1, le=1000, description="Upper bound the pool scales to.")
    worker_type: str = Field(default="terminal-qwen", description="AI CLI the `prompt` task type runs.")
    region: str = Field(default="default", description="Free-form placement label.")
    endpoint: str | None = Field(default=None, description="MCP URL of a session-buddy peer.")
    namespace: str = Field(default="mahavishnu", description="Kubernetes namespace.")
    container_image: str = Field(default="python:3.13-slim", description="Kubernetes container image.")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")
    kube_context: str | None = Field(default=None, description="Kubernetes: a context of the operator's kubeconfig, "
                                                               "one the operator allows (see pools_credentials); "
                                                               "default its current context.")
    credential: str | None = Field(default=None, description="Name of an operator-declared credential to "
                                                             "authenticate with (see pools_credentials); it must "
                                                             "be bound to endpoint or kube_context. Default: the "
                                                             "credential bound to endpoint, if any.")
    cpu_request: str | None = Field(default=None, description="Kubernetes: CPU request per task pod, e.g. 250m.")
    memory_request: str | None = Field(default=None, description="Kubernetes: memory request, e.g. 256Mi.")
    cpu_limit: str | None = Field(default=None, description="Kubernetes: CPU limit per task pod.")
    memory_limit: str | None = Field(default=None, description="Kubernetes: memory limit per task pod.")
    warm: bool = Field(default=False, description="Kubernetes: keep warm workers, a Deployment of the peer server "
                                                  "with a Service and a HorizontalPodAutoscaler (min..max replicas), "
                                                  "instead of a Job per task. The image must have this package.")
    cpu_target_percent: int = Field(default=70, ge=1, le=100, description="Kubernetes warm mode: the HPA's CPU "
                                                                          "utilization target.")

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(
                "must start with a letter or digit and use only letters, digits, '.', '_' or '-' (1-63 chars)"
            )
        if value.startswith("pool_") or value.startswith("task_"):
            raise ValueError("must not start with 'pool_' or 'task_' (those prefixes are ids)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PoolConfig:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) is larger than max_workers ({self.max_workers})")
        if self.type is PoolType.SESSION_BUDDY and not self.endpoint:
            raise ValueError("a session-buddy pool needs `endpoint` (e.g. http://localhost:8678/mcp)")
        if self.endpoint and not re.match(r"^https?://", self.endpoint):
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {self.endpoint!r}")
        return self


class WorkerInfo(Model):
    worker_id: str
    pid: int | None = None
    state: str = Field(description="idle, busy, starting or stopping")
    task_id: str | None = None
    tasks_done: int = 0
    memory_mb: float | None = None
    cpu_percent: float | None = None


class PoolMetrics(Model):
    tasks_completed: int = 0
    tasks_failed: int = 0
    tasks_cancelled: int = 0
    tasks_timed_out: int = 0
    avg_duration_s: float | None = None
    memory_mb: float | None = None
    cpu_percent: float | None = None
    queue_size: int = 0
    in_flight: int = 0


class PoolInfo(Model):
    pool_id: str
    name: str
    pool_type: PoolType
    status: PoolStatus
    status_reason: str | None = None
    workers: int = 0
    min_workers: int
    max_workers: int
    worker_type: str
    region: str
    endpoint: str | None = None
    credential: str | None = Field(default=None, description="The operator's credential it authenticates with.")
    namespace: str
    container_image: str
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    metrics: PoolMetrics = Field(default_factory=PoolMetrics)
    worker_details: list[WorkerInfo] = Field(default_factory=list)

    @property
    def capacity(self) -> int:
        return max(self.workers, 1)


class TaskOptions(Model):
    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=300.0, gt=0, le=7 * 24 * 3600, description="Seconds the task may run.")
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts after a worker crash.")
    affinity_key: str | None = Field(default=None, description="Tasks with the same key prefer one pool.")


class Link(Model):
    """Where a value too large to inline is read: MCP resources/read on `uri`, in pages."""

    uri: str = Field(description="mahavishnu://tasks/{id}/result (or /payload), mahavishnu://distributions/{id}/result")
    size: int = Field(description="Size of the value's JSON text, in bytes (UTF-8).")
    mime_type: str = "application/json"


class TaskRecord(Model):
    # Built at import: the hot path makes records with model_construct, and a copy of a
    # constructed record of a never-built deferred model fails to serialize.
    model_config = ConfigDict(defer_build=False)

    task_id: str
    pool_id: str
    task_type: str
    payload: dict[str, Any]
    state: TaskState
    worker_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    result: Any = None
    summary: str | None = None
    error: str | None = None
    timeout: float = 300.0
    attempts: int = 0
    retries: int = 0
    pool_fault: bool = Field(default=False, description="The pool failed it (worker died, pool closed), "
                                                        "not the task's own code.")
    result_link: Link | None = Field(default=None, description="Set when the result was too large to inline "
                                                               "(result is then null): read it from here.")
    payload_link: Link | None = Field(default=None, description="Set when the payload was too large to inline "
                                                                "(payload is then {}).")

    @classmethod
    def trusted(cls, **values: Any) -> TaskRecord:
        """A record from values this process made or read back from its own store: no validation,
        and none of model_construct's walk over every field (the per-task hot path). Fields not
        given take their defaults."""
        record = cls.__new__(cls)
        object.__setattr__(record, "__dict__", {**_RECORD_TEMPLATE, **values})
        object.__setattr__(record, "__pydantic_fields_set__", set(values))
        object.__setattr__(record, "__pydantic_extra__", None)
        object.__setattr__(record, "__pydantic_private__", None)
        return record

    def update(self, **changes: Any) -> None:
        """Set fields from trusted internal values without pydantic's per-assignment handler."""
        self.__dict__.update(changes)
        self.__pydantic_fields_set__.update(changes)


# Every field in declaration order (a merge keeps the template's key order, so a record's JSON lists
# its fields as the schema does); the required ones are always among the values `trusted` is given.
_RECORD_TEMPLATE = {name: None if field.is_required() else field.default
                    for name, field in TaskRecord.model_fields.items()}


class PoolHealth(Model):
    pool_id: str
    name: str
    pool_type: PoolType
    status: PoolStatus
    healthy: bool
    workers: int
    queue_size: int = 0
    reason: str | None = None


class HealthReport(Model):
    status: str = Field(description="healthy, degraded (some pools unhealthy) or unhealthy (none healthy)")
    active_pools: int
    pools: list[PoolHealth]


class TypeStats(Model):
    pools: int = 0
    workers: int = 0


class StatsReport(Model):
    total_pools: int
    active_pools: int
    degraded_pools: int
    failed_pools: int
    total_workers: int
    busy_workers: int
    queued_tasks: int
    running_tasks: int
    tasks_completed: int
    tasks_failed: int
    tasks_cancelled: int
    tasks_timed_out: int
    avg_duration_s: float | None = None
    memory_mb: float | None = Field(default=None, description="Resident memory of every pool's workers, where "
                                                              "the pool type reports it (local and peer pools).")
    by_type: dict[str, TypeStats] = Field(default_factory=dict)


class RoutingStrategy(StrEnum):
    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    AFFINITY = "affinity"


class DistributionStrategy(StrEnum):
    ROUND_ROBIN = "round_robin"
    BROADCAST = "broadcast"
    RANDOM = "random"
    LEAST_LOADED = "least_loaded"
    MAP_REDUCE = "map_reduce"


class RebalanceStrategy(StrEnum):
    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"


class SkippedPool(Model):
    pool_id: str
    name: str
    reason: str


class RouteDecision(Model):
    pool_id: str
    pool_name: str
    strategy: RoutingStrategy
    reason: str = Field(description="Why this pool was chosen.")
    fallback: bool = Field(default=False, description="Affinity could not be kept (its pool was unhealthy).")
    load: float = Field(description="The chosen pool's (in-flight + queued) / capacity when chosen.")
    skipped: list[SkippedPool] = Field(default_factory=list)


class ShardResult(Model):
    index: int
    pool_id: str
    pool_name: str
    task_id: str | None = None
    state: TaskState
    duration_s: float | None = None
    error: str | None = None
    summary: str | None = None
    attempts: int = Field(default=1, description="Pools tried: >1 when a pool failed and another took over.")
    retried_from: list[str] = Field(default_factory=list, description="Pools that failed this shard first.")
    result: Any = None
    result_link: Link | None = Field(default=None, description="Set when the result was too large to inline.")


class DistributionResult(Model):
    strategy: DistributionStrategy
    task_type: str
    pools: list[str] = Field(description="Names of the pools that took part.")
    total: int
    successful: int
    failed: int
    retried: int = Field(default=0, description="Shards moved to another pool after a pool failure.")
    duration_s: float
    shards: list[ShardResult]
    result: Any = Field(default=None, description="map_reduce: the reduced result of all shards.")
    result_link: Link | None = Field(default=None, description="Set when the reduced result was too large to "
                                                               "inline (result is then null).")
    summary: str | None = None


class Move(Model):
    task_id: str
    from_pool: str
    to_pool: str


class Resize(Model):
    pool: str
    from_workers: int
    to_workers: int


class RebalanceReport(Model):
    strategy: RebalanceStrategy
    moved: list[Move] = Field(default_factory=list)
    resized: list[Resize] = Field(default_factory=list)
    message: str
