"""The one list of tools. The MCP server registers these; the CLI generates its `pools`
commands from them; specs/tools.md is rendered from them. Imports no MCP SDK."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from mcp_server import schemas as s


@dataclass(frozen=True)
class ToolSpec:
    name: str
    command: str
    title: str
    description: str
    input_model: type[BaseModel]
    output: type[BaseModel] | str  # a class, or "module:Class" imported on first use (keeps --help fast)
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    # Presentation for the CLI only: short option names and arguments given by position.
    short: dict[str, str] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    formats: tuple[str, ...] = ("table", "json", "markdown")
    # Where the answer holds a `result` (and `result_link` when it was too large to inline): the CLI
    # offers --output FILE for it. None: the tool returns no task result.
    result_at: tuple[str, ...] | None = None
    cli_description: str | None = None  # the command's help where the tool's description fits no terminal
    wide: bool = False  # a table with ids: short ids on a narrow terminal unless --wide

    @property
    def output_model(self) -> type[BaseModel]:
        if isinstance(self.output, str):
            import importlib

            module, _, name = self.output.partition(":")
            model: type[BaseModel] = getattr(importlib.import_module(module), name)
            return model
        return self.output


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "pools_list", "list", "List pools",
        "List registered pools with their type, status, worker count and range, and task metrics. "
        "Filter with active_only (running pools) and by_type.",
        s.ListInput, s.PoolList, read_only=True, idempotent=True, wide=True),
    ToolSpec(
        "pools_get", "get", "Get one pool",
        "Details of one pool by name or id: configuration, status (and why, when not running), workers "
        "with their pid, state, memory and CPU, and task metrics.",
        s.GetInput, s.PoolInfo, read_only=True, idempotent=True, positional=("pool",)),
    ToolSpec(
        "pools_register", "register", "Register a pool",
        "Create a pool and start its workers. type 'mahavishnu' runs worker processes on the server's "
        "machine, scaling between min_workers and max_workers. Names are unique among open pools. Returns "
        "the new pool (its id is pool_<12 hex>).",
        s.RegisterInput, s.PoolInfo, read_only=False,
        short={"name": "-n", "type": "-t", "max_workers": "-w", "min_workers": "-m", "region": "-r"}),
    ToolSpec(
        "pools_execute", "execute", "Execute a task",
        "Run one task (a task type and its payload) on a pool and wait for its result up to `timeout` seconds, "
        "sending progress notifications meanwhile. The task is detached from this call: if the call is "
        "cancelled or times out the task keeps running; read it later with pools_task. wait=false returns "
        "the task id at once. See pools_task_types for the types and their payloads.",
        s.ExecuteInput, s.ExecuteOutput, read_only=False,
        short={"task_type": "-t", "pool": "-p", "timeout": "-T"},
        formats=("table", "json", "markdown", "progress"), result_at=("task",)),
    ToolSpec(
        "pools_distribute", "distribute", "Distribute a task over pools",
        "Run one payload across pools. round_robin, random and least_loaded split it (by the task type's split: "
        "analyze by file, echo by item) into shards spread over the pools; broadcast sends the whole payload to "
        "every pool; map_reduce splits, runs shards in parallel and reduces them to one result. A shard whose "
        "pool fails (not the task) is retried on another pool. Reports total, successful and failed shards, "
        "each shard's pool, duration and error, with progress notifications as shards finish.",
        s.DistributeInput, s.DistributionResult, read_only=False,
        short={"task_type": "-t", "strategy": "-s", "timeout": "-T"},
        formats=("table", "json", "markdown", "progress"), result_at=()),
    ToolSpec(
        "pools_task", "task", "Get a task",
        "State of one task by id: queued, running, completed, failed, cancelled or timed_out, with its "
        "pool, worker, times, duration, result, one-line summary and error (with the worker's traceback).",
        s.TaskInput, s.TaskRecord, read_only=True, idempotent=True, positional=("task_id",), result_at=()),
    ToolSpec(
        "pools_tasks", "tasks", "List tasks",
        "Recent tasks, newest first, optionally only one pool's, one state's or one type's. Use it to find "
        "a task whose execute call you gave up on.",
        s.TasksInput, s.TaskList, read_only=True, idempotent=True, short={"pool": "-p"}, wide=True),
    ToolSpec(
        "pools_cancel", "cancel", "Cancel a task",
        "Stop a task. A queued task is dropped; a running one has its worker killed and replaced. Fails "
        "with code conflict when the task already ended.",
        s.CancelInput, s.TaskRecord, read_only=False, destructive=True, positional=("task_id",)),
    ToolSpec(
        "pools_stats", "stats", "Pool statistics",
        "Totals across pools: pools by status, workers, queued and running tasks, tasks completed, "
        "failed, cancelled and timed out, average duration; by_type adds pools and workers per type.",
        s.StatsInput, s.StatsReport, read_only=True, idempotent=True),
    ToolSpec(
        "pools_health", "health", "Pool health",
        "Health of one pool or all: overall status (healthy, degraded, unhealthy), and per pool whether it "
        "is healthy, its workers, queue and the reason when it is not.",
        s.HealthInput, s.HealthReport, read_only=True, idempotent=True, short={"pool": "-p", "all": "-a"},
        wide=True),
    ToolSpec(
        "pools_watch", "watch", "Monitoring snapshot",
        "One monitoring snapshot of all pools (status, workers, tasks completed and failed, queue) plus "
        "totals. Call it repeatedly for a live view; the CLI's `pools watch` does.",
        s.WatchInput, s.WatchSnapshot, read_only=True, idempotent=True, wide=True,
        cli_description="A live table of every pool (status, workers, tasks completed and failed, queue), "
                        "refreshed every --refresh seconds until Ctrl-C; it needs a running server "
                        "(`mahavishnu serve`). -f json or -f markdown prints one snapshot."),
    ToolSpec(
        "pools_rebalance", "rebalance", "Rebalance pools",
        "Move queued tasks from pools with more work than capacity to healthy pools with free capacity, then "
        "size local pools' workers to their demand within min..max. Reports what moved and what was resized.",
        s.RebalanceInput, s.RebalanceReport, read_only=False, short={"strategy": "-s"}),
    ToolSpec(
        "pools_discover", "discover", "Discover peers",
        "Probe candidate Session-Buddy peers (from the ecosystem file with from_ecosystem, else the local "
        "default peer at 127.0.0.1:8678): /health, then the MCP tool list. Reports each candidate, whether it "
        "is healthy and registered; auto_register registers the healthy new ones as session-buddy pools.",
        s.DiscoverInput, "pools.discovery:DiscoverReport", read_only=False),
    ToolSpec(
        "pools_memory_sync", "memory sync", "Sync pool memory",
        "Push task memory records not yet synced (pool, task, type, status, duration, summary) to a "
        "Session-Buddy with store_conversation (store_reflection when that is missing). Batched and resumable: "
        "records are marked synced only after the peer took them.",
        s.MemorySyncInput, "pools.aggregator:SyncReport", read_only=False, idempotent=True),
    ToolSpec(
        "pools_memory_search", "memory search", "Search pool memory",
        "Full-text search of task memory here (summaries, task ids, pool names and ids, task types) and in every "
        "session-buddy pool and operator-configured memory endpoint (settings memory_endpoint, memory_endpoints), "
        "merged and labelled by source. Answers even when a peer is down, and names the sources that did not answer.",
        s.MemorySearchInput, "pools.aggregator:SearchReport", read_only=True, idempotent=True, positional=("query",),
        wide=True),
    ToolSpec(
        "pools_close", "close", "Close a pool",
        "Stop a pool's workers and unregister it. Its queued and running tasks end cancelled; its task "
        "history stays readable. The name becomes free.",
        s.CloseInput, s.PoolInfo, read_only=False, destructive=True, positional=("pool",)),
    ToolSpec(
        "pools_scale", "scale", "Scale a pool",
        "Set a pool's worker count (within min..max). Idle workers above the target stop; new ones start "
        "and the call returns once they are ready.",
        s.ScaleInput, s.PoolInfo, read_only=False, idempotent=True, positional=("pool",)),
    ToolSpec(
        "pools_credentials", "credentials", "List credentials and allowed targets",
        "What the operator lets pools use: the named credentials (a pool's credential field) with the endpoints "
        "and Kubernetes contexts each is bound to, the contexts a Kubernetes pool may choose, where client-given "
        "endpoints may point, and the file roots. Names only, never a secret's value.",
        s.EmptyInput, s.AccessReport, read_only=True, idempotent=True),
    ToolSpec(
        "pools_ping", "ping", "Ping the server",
        "Answer at once with the server's version and clock: a reachability check that touches no pool.",
        s.EmptyInput, s.Pong, read_only=True, idempotent=True),
    ToolSpec(
        "pools_task_types", "task-types", "List task types",
        "Every task type this server knows, whether it is enabled, whether it executes code, what it does "
        "and its payload's JSON schema.",
        s.EmptyInput, s.TaskTypeList, read_only=True, idempotent=True),
)

BY_NAME = {t.name: t for t in TOOLS}
BY_COMMAND = {t.command: t for t in TOOLS}
