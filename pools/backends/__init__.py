"""Pool backends: one module per pool type, behind `PoolBackend`."""

from pools.backends.base import BackendSnapshot, Job, PoolBackend, TaskSink

__all__ = ["BackendSnapshot", "Job", "PoolBackend", "TaskSink"]
