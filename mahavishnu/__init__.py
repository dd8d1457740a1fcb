"""The Python integration API of the user documentation (`from mahavishnu.pools import ...`).

A thin layer over the `pools` library, named as the documentation names it; nothing here runs
tasks, stores state or routes on its own:

    MahavishnuApp().pool_manager        -> AppPoolManager, a pools.manager.PoolManager
    mahavishnu.pools.MemoryAggregator   -> pools.aggregator.sync / search
    EventCollector().collect_event(...) -> the manager's event log (store + event_log setting)
"""

from __future__ import annotations
