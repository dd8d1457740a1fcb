"""The SQLite store: persistence, retention, and queries that stay on indexes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from pools.ids import new_task_id
from pools.manager import PoolManager
from pools.models import PoolConfig, TaskRecord, TaskState
from pools.store import Store
from tests.conftest import make_settings


def record(pool_id: str, state: TaskState = TaskState.QUEUED) -> TaskRecord:
    return TaskRecord(task_id=new_task_id(), pool_id=pool_id, task_type="echo", payload={}, state=state,
                      created_at=datetime.now(UTC))


def test_hot_queries_use_indexes(tmp_path: Path) -> None:
    """The plans of the SQL the store itself runs (captured from its connection), not of copies."""
    store = Store(tmp_path / "db.sqlite")
    ran: list[str] = []
    store._db.set_trace_callback(ran.append)
    hot = {
        "unfinished": lambda: store.unfinished_tasks(),
        "by id": lambda: store.task_row("task_x"),
        "recent": lambda: store.recent_tasks(None, 20),
        "recent per pool": lambda: store.recent_tasks("pool_p", 20),
        "by state": lambda: store.recent_tasks(None, 20, "running"),
        "by pool and state": lambda: store.recent_tasks("pool_p", 20, "queued"),
        "events": lambda: store.events(50),
        "events of a pool": lambda: store.events(50, "pool_p"),
        "prune": lambda: store.prune(time.time()),
    }
    plans = {}
    for name, call in hot.items():
        ran.clear()
        call()
        statements = [sql for sql in ran if sql.split()[0].upper() in ("SELECT", "DELETE")]
        assert statements, name
        plans[name] = [(sql, store.explain(sql)) for sql in statements]
    store._db.set_trace_callback(None)
    for name, found in plans.items():
        for sql, plan in found:
            # The unfiltered listings read their LIMIT newest rows in order (created_at index, rowid); the
            # unfinished tasks are a partial index of their own, read whole and in order.
            allowed = {"recent": "SCAN tasks USING INDEX tasks_created", "events": "SCAN events",
                       "unfinished": "SCAN tasks USING INDEX tasks_unfinished"}.get(name)
            scans = [p for p in plan if p.startswith(("SCAN tasks", "SCAN events")) and p != allowed]
            assert not scans, (name, sql, plan)
            assert not any("TEMP B-TREE" in p for p in plan), (name, sql, plan)  # no sort of every match


def test_counters_and_retention(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.insert_pool("pool_000000000001", "p", {}, "running", time.time())
    old, new = record("pool_000000000001"), record("pool_000000000001")
    for r in (old, new):
        store.insert_task(r)
        r.state, r.duration_s = TaskState.COMPLETED, 2.0
        r.started_at = r.created_at
        r.finished_at = datetime.fromtimestamp(time.time() - (100 * 86400 if r is old else 0), UTC)
        store.mark_finished(r)
    row = store.pool_row("pool_000000000001")
    assert row is not None and row["completed"] == 2 and row["duration_sum"] == 4.0
    assert store.prune(time.time() - 30 * 86400) == 1
    assert store.task_row(old.task_id) is None and store.task_row(new.task_id) is not None
    # counters are history: pruning rows does not rewrite them
    row = store.pool_row("pool_000000000001")
    assert row is not None and row["completed"] == 2
    store.close()
    reopened = Store(tmp_path / "db.sqlite")
    assert reopened.task_row(new.task_id) is not None


def committed(path: Path, task_id: str) -> bool:
    """What another process (or this one restarted) reads: committed rows only."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone() is not None
    finally:
        db.close()


async def test_durable_waiters_share_one_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    records = [record("pool_000000000001") for _ in range(50)]

    async def ack(r: TaskRecord) -> None:
        store.insert_task(r)
        await store.durable()
        assert committed(store.path, r.task_id)

    before = store.commits
    store.insert_task(record("pool_000000000001"))  # bookkeeping nobody waits for yet
    assert not store.settled
    await asyncio.gather(*(ack(r) for r in records))
    assert store.settled and store.commits - before == 1
    store.close()


async def test_submit_returns_only_committed_ids(tmp_path: Path) -> None:
    async with PoolManager(make_settings(tmp_path / "home")) as m:
        await m.register(PoolConfig(name="p", min_workers=1, max_workers=1))
        tasks = await asyncio.gather(*(m.submit("p", "echo", {"i": i}) for i in range(20)))
        assert all(committed(m.store.path, t.task_id) for t in tasks)
        for t in tasks:
            done = await m.wait(t.task_id, 30)
            assert done.state is TaskState.COMPLETED
            db = sqlite3.connect(m.store.path)  # the outcome a waiter sees is committed too
            assert db.execute("SELECT state FROM tasks WHERE task_id = ?", (t.task_id,)).fetchone()[0] == "completed"
            db.close()
