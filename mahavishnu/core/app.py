"""MahavishnuApp: one pool manager on the state directory, started on first use."""

from __future__ import annotations

import asyncio
from typing import Any

from pools.errors import InvalidInput
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolType, RoutingStrategy, TaskOptions, TaskRecord
from pools.settings import Settings


def _task(task: dict[str, Any]) -> tuple[str, dict[str, Any], TaskOptions]:
    """{"task_type", "payload", and optionally "timeout", "retries", "affinity_key"} -> its parts."""
    if not isinstance(task, dict) or not isinstance(task.get("task_type"), str):
        raise InvalidInput('a task is a dict {"task_type": NAME, "payload": {...}}', field="task_type")
    payload = task.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidInput("the task's payload must be a dict", field="payload")
    options = TaskOptions.model_validate({k: v for k, v in task.items() if k not in ("task_type", "payload")})
    return task["task_type"], payload, options


class AppPoolManager(PoolManager):
    """The PoolManager with the documentation's method names; it starts itself on first use
    (taking the state directory) and `close()` releases it."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self._starting = asyncio.Lock()

    def __repr__(self) -> str:
        if not self.started:
            return f"<AppPoolManager on {self.settings.home}: not started (it starts on first use)>"
        pools = self.list_pools()
        running = sum(1 for p in pools if p.status.value == "running")
        return (f"<AppPoolManager on {self.settings.home}: started, {len(pools)} pool{'s' * (len(pools) != 1)} "
                f"({running} running), {sum(p.workers for p in pools)} workers>")

    async def ensure_started(self) -> AppPoolManager:
        async with self._starting:
            if not self.started:
                await self.start()
        return self

    async def spawn_pool(self, pool_type: PoolType | str, config: PoolConfig) -> str:
        """Register a pool of `pool_type` and start its workers; returns its id."""
        kind = PoolType(pool_type)
        if "type" in config.model_fields_set and config.type is not kind:
            raise InvalidInput(f"spawn_pool({kind.value!r}, ...) was given a config of type {config.type.value!r}",
                               field="pool_type")
        await self.ensure_started()
        info = await self.register(config.model_copy(update={"type": kind}))
        return info.pool_id

    async def execute_on_pool(self, pool_id: str, task: dict[str, Any]) -> TaskRecord:
        """Run one task on a pool (by id or name) and wait for it to end."""
        task_type, payload, options = _task(task)
        await self.ensure_started()
        return await self.execute(pool_id, task_type, payload, options)

    async def route_task(self, task: dict[str, Any],
                         strategy: RoutingStrategy | str = RoutingStrategy.LEAST_LOADED) -> TaskRecord:
        """Choose a pool by `strategy` among the healthy ones that take the task type, and run it there."""
        task_type, payload, options = _task(task)
        await self.ensure_started()
        decision = self.route(task_type, RoutingStrategy(strategy), options.affinity_key)
        return await self.execute(decision.pool_id, task_type, payload, options)


class MahavishnuApp:
    """The application object of the documentation: `maha_app.pool_manager` is the pool manager
    on the state directory ($MAHAVISHNU_HOME, else the XDG state directory)."""

    current: MahavishnuApp | None = None  # the latest app; EventCollector() logs to its manager

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.load()
        self.pool_manager = AppPoolManager(self.settings)
        MahavishnuApp.current = self

    async def close(self) -> None:
        await self.pool_manager.close()

    async def __aenter__(self) -> MahavishnuApp:
        await self.pool_manager.ensure_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
