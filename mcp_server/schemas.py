"""Input and output models of every tool. The MCP schemas, the CLI options and specs/ all
come from these classes, so they cannot disagree."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from pools.credentials import CredentialInfo
from pools.ids import TASK_REF_PATTERN
from pools.models import (
    DistributionResult,
    DistributionStrategy,
    HealthReport,
    Model,
    PoolConfig,
    PoolInfo,
    PoolStatus,
    PoolType,
    RebalanceReport,
    RebalanceStrategy,
    RouteDecision,
    RoutingStrategy,
    StatsReport,
    TaskRecord,
    TaskState,
)

POOL_REF = "Pool name or id (pool_<12 hex>)."
TASK_REF = ("Task id (task_<32 hex>), as returned by execute, or a unique prefix of one with at least 8 hex "
            "digits (as a narrow table shows it).")


class Input(Model):
    model_config = ConfigDict(extra="forbid")


class ListInput(Input):
    active_only: bool = Field(default=False, description="Show only running pools.")
    by_type: PoolType | None = Field(default=None, description="Only pools of this type.")


class PoolRefInput(Input):
    pool: str = Field(min_length=1, description=POOL_REF)


class GetInput(PoolRefInput):
    pass


class CloseInput(PoolRefInput):
    pass


class ScaleInput(PoolRefInput):
    target: int = Field(ge=0, le=1000, description="Worker count to move to, within the pool's min..max.")


class RegisterInput(PoolConfig):
    """Registering takes exactly a pool's configuration."""


class ExecuteInput(Input):
    task_type: str = Field(min_length=1, description="Task type, e.g. analyze or echo; see pools_task_types.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Task payload (a JSON object).")
    pool: str | None = Field(default=None, description=POOL_REF + " Defaults to the pool named 'default' "
                                                             "unless auto_route is set.")
    auto_route: bool = Field(default=False, description="Choose the pool by `strategy` among healthy pools "
                                                        "that accept the task type (instead of `pool`).")
    strategy: RoutingStrategy = Field(default=RoutingStrategy.LEAST_LOADED,
                                      description="With auto_route: least_loaded (in-flight tasks relative to "
                                                  "capacity), round_robin, random or affinity.")
    affinity_key: str | None = Field(default=None, description="With `strategy` affinity: tasks with the same key "
                                                               "go to the same pool while it is healthy.")
    timeout: float = Field(default=300.0, gt=0, le=7 * 24 * 3600,
                           description="Seconds the task may run before it is killed (timed_out). The call "
                                       "waits at most this long; the task stays queryable by id either way.")
    wait: bool = Field(default=True, description="Wait for the result; wait=false returns the task id at once.")
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts when a worker dies mid-task.")


class ExecuteOutput(Model):
    task: TaskRecord
    pool_id: str
    pool_name: str
    routing: RouteDecision | None = Field(default=None, description="How the pool was chosen (auto_route).")
    finished: bool = Field(description="False when the call stopped waiting before the task ended.")
    message: str


class DistributeInput(Input):
    task_type: str = Field(min_length=1, description="Task type; it must be able to split for the shard "
                                                     "strategies (analyze splits by file, echo by item).")
    payload: dict[str, Any] = Field(default_factory=dict, description="Task payload (a JSON object).")
    strategy: DistributionStrategy = Field(
        default=DistributionStrategy.ROUND_ROBIN,
        description="round_robin, random or least_loaded: split into shards spread over pools; broadcast: the "
                    "whole payload to every pool; map_reduce: split, run in parallel, reduce to one result.")
    pool_filter: PoolType | None = Field(default=None, description="Only pools of this type take part.")
    timeout: float = Field(default=300.0, gt=0, le=7 * 24 * 3600,
                           description="Seconds each shard may run; shards unfinished by then are cancelled.")


class RebalanceInput(Input):
    strategy: RebalanceStrategy = Field(default=RebalanceStrategy.LEAST_LOADED,
                                        description="Where moved tasks go: least_loaded, round_robin or random.")


class DiscoverInput(Input):
    from_ecosystem: bool = Field(default=False, description="Read candidates from an ecosystem file: "
                                                            "`ecosystem_file` if given, else the one in settings "
                                                            "(default $MAHAVISHNU_HOME/ecosystem.yaml); it must exist."
                                                            " Otherwise probe the local default peer.")
    auto_register: bool = Field(default=False, description="Register the healthy candidates that are new.")
    ecosystem_file: str | None = Field(default=None, description="Path of another ecosystem file to read.")


class MemorySyncInput(Input):
    endpoint: str | None = Field(default=None, pattern=r"^https?://",
                                 description="Session-Buddy MCP URL; default the memory_endpoint setting.")
    batch_size: int = Field(default=50, ge=1, le=1000, description="Records pushed (and marked synced) per batch.")


class MemorySearchInput(Input):
    query: str = Field(min_length=1, description="Words to find in task memory (all must match locally).")
    limit: int = Field(default=20, ge=1, le=500, description="Hits per source at most.")


class TaskInput(Input):
    task_id: str = Field(pattern=TASK_REF_PATTERN, description=TASK_REF)


class CancelInput(TaskInput):
    pass


class TasksInput(Input):
    pool: str | None = Field(default=None, description=POOL_REF + " Omit for all pools.")
    state: TaskState | None = Field(default=None, description="Only tasks in this state.")
    task_type: str | None = Field(default=None, description="Only tasks of this type.")
    limit: int = Field(default=20, ge=1, le=1000, description="Most recent first, at most this many.")


class TaskList(Model):
    tasks: list[TaskRecord]


class StatsInput(Input):
    by_type: bool = Field(default=False, description="Also group pools and workers by pool type.")


class HealthInput(Input):
    pool: str | None = Field(default=None, description=POOL_REF + " Omit to check all pools.")
    all: bool = Field(default=True, description="Check all pools (the default when no pool is given).")


class WatchInput(Input):
    active_only: bool = Field(default=False, description="Show only running pools.")


class EmptyInput(Input):
    pass


class Pong(Model):
    ok: bool = True
    version: str
    server_time: float = Field(description="Server clock, seconds since the epoch.")


class PoolList(Model):
    pools: list[PoolInfo]


class WatchSnapshot(Model):
    pools: list[PoolInfo]
    active: int
    stats: StatsReport


class TaskTypeInfo(Model):
    name: str
    enabled: bool
    executes_code: bool = False
    description: str = ""
    payload_schema: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class TaskTypeList(Model):
    task_types: list[TaskTypeInfo]


class AccessReport(Model):
    credentials: list[CredentialInfo] = Field(description="Credentials a pool may name, with where each may be "
                                                          "sent; never their values.")
    kube_contexts: list[str] = Field(description="Contexts of the operator's kubeconfig a Kubernetes pool may "
                                                 "choose (besides those bound to a credential).")
    allowed_endpoints: list[str] = Field(description="Where client-given endpoints may point (URL prefixes, hosts, "
                                                     "networks), besides the credentials' endpoints.")
    file_roots: list[str] = Field(description="Directories tasks and tools may read files in.")


class ErrorInfo(Model):
    code: str = Field(description="Stable kind: invalid_input, pool_not_found, task_not_found, conflict, ...")
    message: str
    field: str | None = None


class ErrorOutput(Model):
    error: ErrorInfo


Format = Literal["table", "json", "markdown", "progress"]

__all__ = [
    "AccessReport", "CancelInput", "CloseInput", "DiscoverInput", "DistributeInput", "DistributionResult", "EmptyInput",
    "ErrorInfo", "ErrorOutput", "ExecuteInput", "ExecuteOutput", "GetInput", "HealthInput", "HealthReport",
    "ListInput", "MemorySearchInput", "MemorySyncInput", "Pong", "PoolInfo", "PoolList", "PoolStatus",
    "RebalanceInput", "RebalanceReport", "RegisterInput", "ScaleInput", "StatsInput", "StatsReport", "TaskInput",
    "TaskList", "TaskRecord", "TaskTypeInfo", "TaskTypeList", "TasksInput", "WatchInput", "WatchSnapshot",
]
