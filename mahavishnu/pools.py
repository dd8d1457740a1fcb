"""`from mahavishnu.pools import ...`: the pool models and the memory aggregator."""

from __future__ import annotations

from pools import aggregator
from pools.aggregator import SearchReport, SyncReport
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolStatus, PoolType, RoutingStrategy, TaskRecord, TaskState

__all__ = ["MemoryAggregator", "PoolConfig", "PoolManager", "PoolStatus", "PoolType", "RoutingStrategy",
           "SearchReport", "SyncReport", "TaskRecord", "TaskState"]


class MemoryAggregator:
    """Pool memory across machines: push task memory to a Session-Buddy, search every pool's."""

    def __init__(self, endpoint: str | None = None, batch_size: int = 50) -> None:
        self.endpoint = endpoint  # None: the memory_endpoint setting
        self.batch_size = batch_size

    async def collect_and_sync(self, pool_manager: PoolManager) -> SyncReport:
        """Push the finished tasks not yet synced; resumable, see pools.aggregator.sync."""
        await _started(pool_manager)
        return await aggregator.sync(pool_manager, self.endpoint, self.batch_size)

    async def cross_pool_search(self, query: str, pool_manager: PoolManager, limit: int = 20) -> SearchReport:
        """Local task memory and every session-buddy pool's, merged and labelled by source."""
        await _started(pool_manager)
        return await aggregator.search(pool_manager, query, limit)


async def _started(manager: PoolManager) -> None:
    ensure = getattr(manager, "ensure_started", None)
    if ensure is not None:
        await ensure()
