"""EventCollector: put an application's own events into the pool manager's event log, beside
the pools' (the store's events table, and the `event_log` JSON lines when that is set)."""

from __future__ import annotations

from typing import Any

from pools.errors import InvalidInput
from pools.manager import PoolManager


class EventCollector:
    def __init__(self, pool_manager: PoolManager | None = None) -> None:
        self._manager = pool_manager

    def _target(self) -> PoolManager:
        if self._manager is None:
            from mahavishnu.core.app import MahavishnuApp

            self._manager = (MahavishnuApp.current or MahavishnuApp()).pool_manager
        return self._manager

    async def collect_event(self, event: dict[str, Any]) -> None:
        """Log one event: {"type": KIND, "pool_id"?: ..., "task_id"?: ..., anything else as its data}."""
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str) or not kind:
            raise InvalidInput('an event needs "type", a non-empty string', field="type")
        manager = self._target()
        ensure = getattr(manager, "ensure_started", None)
        if ensure is not None:
            await ensure()
        data = {k: v for k, v in event.items() if k not in ("type", "pool_id", "task_id")}
        await manager.record_event(kind, event.get("pool_id"), event.get("task_id"), data)
