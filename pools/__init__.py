"""Mahavishnu pools: worker pools and the tasks that run on them.

Imports stay lazy so that `import pools` (and the CLI's --help) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pools.manager import PoolManager
    from pools.models import PoolConfig, PoolStatus, PoolType, TaskOptions, TaskRecord, TaskState
    from pools.settings import Settings

__all__ = ["PoolConfig", "PoolManager", "PoolStatus", "PoolType", "Settings", "TaskOptions", "TaskRecord",
           "TaskState"]

_WHERE = {"PoolManager": "pools.manager", "Settings": "pools.settings"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module(_WHERE.get(name, "pools.models")), name)
    raise AttributeError(name)
