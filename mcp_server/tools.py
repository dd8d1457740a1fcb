"""Tool bodies: thin typed functions over PoolManager, free of any MCP detail.

Each takes the manager, its validated input model and a progress callback, and
returns its output model or raises a PoolError (which the server turns into an
`isError` result that names the field and says what to do).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from mcp_server import schemas as s
from pools.aggregator import SearchReport, SyncReport
from pools.discovery import DiscoverReport
from pools.errors import InvalidInput, PoolNotFound
from pools.manager import PoolManager
from pools.models import RoutingStrategy, TaskOptions, TaskState

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
Handler = Callable[[PoolManager, Any, Progress], Awaitable[BaseModel]]

PROGRESS_EVERY = 1.0  # seconds between progress notifications while a task runs


async def pools_list(m: PoolManager, inp: s.ListInput, progress: Progress) -> s.PoolList:
    return s.PoolList(pools=m.list_pools(active_only=inp.active_only, pool_type=inp.by_type))


async def pools_get(m: PoolManager, inp: s.GetInput, progress: Progress) -> s.PoolInfo:
    return m.get_pool(inp.pool)


async def pools_register(m: PoolManager, inp: s.RegisterInput, progress: Progress) -> s.PoolInfo:
    return await m.register(inp)


async def pools_execute(m: PoolManager, inp: s.ExecuteInput, progress: Progress) -> s.ExecuteOutput:
    routing = None
    if inp.auto_route:
        if inp.pool:
            raise InvalidInput("give either `pool` or `auto_route`, not both", field="auto_route")
        if inp.strategy is RoutingStrategy.AFFINITY and not inp.affinity_key:
            raise InvalidInput("`strategy` affinity needs `affinity_key`", field="affinity_key")
        routing = m.route(inp.task_type, inp.strategy, inp.affinity_key)
        pool = m.resolve(routing.pool_id)
    else:
        try:
            pool = m.resolve(inp.pool or "default")
        except PoolNotFound as exc:
            if inp.pool is None:
                raise PoolNotFound("no pool given and there is no pool named 'default'; pass `pool` or `auto_route`; "
                                   "`mahavishnu pools list` shows the pools", field="pool") from exc
            raise
    # A waiting call shows the id only at the end: one commit then (m.wait) instead of two.
    record = await m.submit(pool.pool_id, inp.task_type, inp.payload,
                            TaskOptions(timeout=inp.timeout, retries=inp.retries, affinity_key=inp.affinity_key),
                            durable=not inp.wait)
    name = pool.config.name

    def out(finished: bool, message: str) -> s.ExecuteOutput:
        return s.ExecuteOutput(task=record, pool_id=pool.pool_id, pool_name=name, routing=routing,
                               finished=finished, message=message)

    if not inp.wait:
        return out(False, f"queued as {record.task_id}; `mahavishnu pools task {record.task_id}` shows its state")
    # Wait in slices so progress flows; the task's own timeout is enforced by its pool.
    deadline = time.monotonic() + inp.timeout + 5.0
    await progress(0, 1, f"queued on {name}")
    while True:
        record = await m.wait(record.task_id, min(PROGRESS_EVERY, max(0.0, deadline - time.monotonic())))
        if record.state.terminal or time.monotonic() >= deadline:
            break
        if record.state is TaskState.RUNNING and record.started_at is not None:
            ran = time.time() - record.started_at.timestamp()
            await progress(0.5, 1, f"running on {name}/{record.worker_id} for {ran:.0f}s")
        else:
            await progress(0, 1, f"queued on {name}")
    if record.state.terminal:
        await progress(1, 1, record.state.value)
        return out(True, f"{record.state.value}: {record.summary or ''}".rstrip(": "))
    await m.durable()
    return out(False, f"still {record.state.value} after {inp.timeout:g}s; it keeps running: "
                      f"`mahavishnu pools task {record.task_id}`")


async def pools_distribute(m: PoolManager, inp: s.DistributeInput, progress: Progress) -> s.DistributionResult:
    return await m.distribute(inp.task_type, inp.payload, inp.strategy, inp.pool_filter, inp.timeout, progress)


async def pools_rebalance(m: PoolManager, inp: s.RebalanceInput, progress: Progress) -> s.RebalanceReport:
    return await m.rebalance(inp.strategy)


async def pools_task(m: PoolManager, inp: s.TaskInput, progress: Progress) -> s.TaskRecord:
    return m.get_task(inp.task_id)


async def pools_tasks(m: PoolManager, inp: s.TasksInput, progress: Progress) -> s.TaskList:
    return s.TaskList(tasks=m.list_tasks(pool=inp.pool, state=inp.state, task_type=inp.task_type,
                                         limit=inp.limit))


async def pools_cancel(m: PoolManager, inp: s.CancelInput, progress: Progress) -> s.TaskRecord:
    return await m.cancel(inp.task_id)


async def pools_stats(m: PoolManager, inp: s.StatsInput, progress: Progress) -> s.StatsReport:
    report = m.stats()
    if not inp.by_type:
        report.by_type = {}
    return report


async def pools_health(m: PoolManager, inp: s.HealthInput, progress: Progress) -> s.HealthReport:
    return m.health(inp.pool)


async def pools_watch(m: PoolManager, inp: s.WatchInput, progress: Progress) -> s.WatchSnapshot:
    pools = m.list_pools(active_only=inp.active_only)
    active = sum(1 for p in pools if p.status.accepts_work)
    return s.WatchSnapshot(pools=pools, active=active, stats=m.stats())


async def pools_close(m: PoolManager, inp: s.CloseInput, progress: Progress) -> s.PoolInfo:
    return await m.close_pool(inp.pool)


async def pools_scale(m: PoolManager, inp: s.ScaleInput, progress: Progress) -> s.PoolInfo:
    return await m.scale_pool(inp.pool, inp.target)


async def pools_discover(m: PoolManager, inp: s.DiscoverInput, progress: Progress) -> DiscoverReport:
    from pathlib import Path

    from pools.discovery import discover

    path = Path(inp.ecosystem_file) if inp.ecosystem_file else None  # checked against the file roots there
    return await discover(m, path, inp.from_ecosystem or path is not None, inp.auto_register)


async def pools_memory_sync(m: PoolManager, inp: s.MemorySyncInput, progress: Progress) -> SyncReport:
    from pools import aggregator

    return await aggregator.sync(m, inp.endpoint, inp.batch_size)


async def pools_memory_search(m: PoolManager, inp: s.MemorySearchInput, progress: Progress) -> SearchReport:
    from pools import aggregator

    return await aggregator.search(m, inp.query, inp.limit)


async def pools_credentials(m: PoolManager, inp: s.EmptyInput, progress: Progress) -> s.AccessReport:
    contexts = sorted({*m.settings.kube_contexts})
    return s.AccessReport(credentials=m.credentials.describe(), kube_contexts=contexts,
                          allowed_endpoints=list(m.settings.allowed_endpoints),
                          file_roots=m.file_roots().roots)


async def pools_ping(m: PoolManager, inp: s.EmptyInput, progress: Progress) -> s.Pong:
    from mcp_server import __version__

    return s.Pong(version=__version__, server_time=time.time())


async def pools_task_types(m: PoolManager, inp: s.EmptyInput, progress: Progress) -> s.TaskTypeList:
    return s.TaskTypeList(task_types=[s.TaskTypeInfo.model_validate(t) for t in m.task_types.describe()])


HANDLERS: dict[str, Handler] = {
    name: fn for name, fn in globals().items() if name.startswith("pools_") and callable(fn)
}
