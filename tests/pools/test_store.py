"""The SQLite store: persistence, retention, and queries that stay on indexes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pools import store as store_module
from pools.errors import StoreFailure
from pools.ids import new_task_id
from pools.manager import PoolManager
from pools.models import PoolConfig, TaskRecord, TaskState
from pools.store import CHUNK, THREAD_BATCH, Store
from tests.conftest import make_settings
from tests.helpers.waiting import wait_until


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
    old.created_at = datetime.fromtimestamp(time.time() - 100 * 86400, UTC)  # made and ended 100 days ago
    for r in (old, new):
        store.insert_task(r)
        r.state, r.duration_s = TaskState.COMPLETED, 2.0
        r.started_at = r.finished_at = r.created_at
        store.mark_finished(r)
    # made long ago, ended just now: kept (retention counts from the end)
    late = record("pool_000000000001")
    late.created_at = old.created_at
    store.insert_task(late)
    late.state, late.finished_at = TaskState.FAILED, datetime.now(UTC)
    store.mark_finished(late)
    row = store.pool_row("pool_000000000001")
    assert row is not None and row["completed"] == 2 and row["duration_sum"] == 4.0
    assert store.prune(time.time() - 30 * 86400) == 1
    assert store.task_row(old.task_id) is None and store.task_row(new.task_id) is not None
    assert store.task_row(late.task_id) is not None
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


def row_of(store: Store, task_id: str) -> sqlite3.Row:
    row = store.task_row(task_id)
    assert row is not None
    return row


async def test_buffered_task_writes_are_read_back_and_committed_in_order(tmp_path: Path) -> None:
    """Task writes wait in a buffer for the commit; every read before it sees them, a write of
    another kind runs after them, and a start overtaken by the end in one transaction leaves the end."""
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    store.insert_pool("pool_000000000001", "p", {}, "running", time.time())
    store.insert_pool("pool_000000000002", "q", {}, "running", time.time())
    store.commit()
    a, b, c = record("pool_000000000001"), record("pool_000000000001"), record("pool_000000000002")
    for r in (a, b, c):
        store.insert_task(r)
    assert not committed(store.path, a.task_id)  # buffered, not yet committed ...
    assert row_of(store, a.task_id)["state"] == "queued"  # ... and read back on this connection
    assert {r["task_id"] for r in store.recent_tasks(None, 10, "queued")} == {a.task_id, b.task_id, c.task_id}

    now = datetime.now(UTC)
    store.mark_running(a.task_id, "worker_1", now.timestamp(), 1)
    store.mark_running(b.task_id, "worker_1", now.timestamp(), 1)
    store.mark_queued(b.task_id, "pool_000000000002")  # a retry: runs after the buffered start
    a.state, a.worker_id, a.started_at, a.attempts = TaskState.COMPLETED, "worker_1", now, 1
    a.finished_at, a.duration_s, a.result = now, 0.5, {"ok": 1}
    store.mark_finished(a)  # the same transaction: the end supersedes the start
    c.state, c.finished_at, c.error = TaskState.FAILED, now, "boom"
    store.mark_finished(c)
    assert row_of(store, b.task_id)["state"] == "queued" and row_of(store, b.task_id)["worker_id"] is None
    await store.durable()
    assert committed(store.path, a.task_id) and committed(store.path, c.task_id)

    db = sqlite3.connect(store.path)  # what a restart would read
    try:
        got = {r[0]: r[1:] for r in db.execute("SELECT task_id, state, pool_id, worker_id, attempts, result "
                                               "FROM tasks")}
        counts = {r[0]: r[1:] for r in db.execute("SELECT pool_id, completed, failed, duration_sum, duration_n "
                                                  "FROM pools")}
    finally:
        db.close()
    assert got[a.task_id] == ("completed", "pool_000000000001", "worker_1", 1, '{"ok":1}')
    assert got[b.task_id] == ("queued", "pool_000000000002", None, 1, None)
    assert got[c.task_id][0] == "failed"
    assert counts == {"pool_000000000001": (1, 0, 0.5, 1), "pool_000000000002": (0, 1, 0.0, 0)}
    store.close()


async def test_a_task_new_in_the_transaction_is_inserted_as_it_stands(tmp_path: Path) -> None:
    """A start or an end of a task inserted in the same transaction goes into its insert: the
    commit writes each such row once (no UPDATE of tasks), with every value of its last state."""
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    store.insert_pool("pool_000000000001", "p", {}, "running", time.time())
    await store.durable()
    ran, done, failed, waiting = (record("pool_000000000001") for _ in range(4))
    for r in (ran, done, failed, waiting):
        store.insert_task(r)
    now = datetime.now(UTC)
    for r in (ran, done, failed):
        store.mark_running(r.task_id, "worker_7", now.timestamp(), 2)
    done.state, done.worker_id, done.started_at, done.finished_at = TaskState.COMPLETED, "worker_7", now, now
    done.attempts, done.duration_s, done.result, done.summary = 2, 0.25, {"ok": [1, "é"]}, "fine"
    store.mark_finished(done)
    failed.state, failed.worker_id, failed.started_at, failed.finished_at = TaskState.FAILED, "worker_7", now, now
    failed.attempts, failed.error, failed.pool_fault = 2, "its worker died", True
    store.mark_finished(failed)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    await store.durable()
    store._db.set_trace_callback(None)
    assert not [s for s in statements if s.startswith("UPDATE tasks")], statements
    db = sqlite3.connect(store.path)
    try:
        got = {row[0]: row[1:] for row in db.execute(
            "SELECT task_id, state, worker_id, started_at, finished_at, attempts, duration, result, summary, "
            "error, pool_fault FROM tasks")}
        counts = db.execute("SELECT completed, failed, duration_sum, duration_n FROM pools").fetchone()
    finally:
        db.close()
    ts = now.timestamp()
    assert got[ran.task_id] == ("running", "worker_7", ts, None, 2, None, None, None, None, 0)
    assert got[done.task_id] == ("completed", "worker_7", ts, ts, 2, 0.25, '{"ok":[1,"é"]}', "fine", None, 0)
    assert got[failed.task_id] == ("failed", "worker_7", ts, ts, 2, None, None, None, "its worker died", 1)
    assert got[waiting.task_id] == ("queued", None, None, None, 0, None, None, None, None, 0)
    assert counts == (1, 1, 0.25, 1)
    store.close()


async def test_a_failed_commit_acknowledges_nothing_of_its_buffer(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    first = record("pool_000000000001")
    store.insert_task(first)
    store.insert_task(first)  # the same id twice: the batch cannot commit
    with pytest.raises(StoreFailure):
        await store.durable()
    assert store.settled and store.task_row(first.task_id) is None
    later = record("pool_000000000001")  # the store goes on with what comes next
    store.insert_task(later)
    await store.durable()
    assert committed(store.path, later.task_id)
    store.close()


async def test_results_read_right_after_the_end_match_the_store(tmp_path: Path) -> None:
    """Finished records are served from memory for a while; what they say is what is stored."""
    async with PoolManager(make_settings(tmp_path / "home")) as m:
        await m.register(PoolConfig(name="p", min_workers=1, max_workers=1))
        small = await m.execute("p", "echo", {"i": 1})
        large = await m.execute("p", "echo", {"text": "x" * 10_000})
        for done in (small, large):
            assert done.state is TaskState.COMPLETED
            again = m.get_task(done.task_id)
            assert again == m._record_from_row(row_of(m.store, done.task_id))
            assert again is not done  # a copy: a caller's changes stay its own
        big_payload = await m.execute("p", "python", {"target": "tests.helpers.tasks:append_line",
                                                      "args": [str(tmp_path / "out"), "y" * 10_000]})
        assert big_payload.state is TaskState.COMPLETED and m.get_task(big_payload.task_id) == big_payload
        assert small.task_id in m._recent  # large payloads or results are read back from the store
        assert large.task_id not in m._recent and big_payload.task_id not in m._recent
        assert not m._large  # nothing kept about tasks that ended


async def test_commits_in_the_writer_thread_acknowledge_only_what_they_hold(tmp_path: Path) -> None:
    """Acks arrive while earlier commits are under way in the writer thread: each returns only
    once its own write is committed (read by a second connection), reads in between see every
    write made so far, and nothing is lost or committed twice."""
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    acked: list[str] = []

    async def ack(r: TaskRecord) -> None:
        store.insert_task(r)
        assert row_of(store, r.task_id)["state"] == "queued"  # read back at once, commit or not
        await store.durable()
        assert committed(store.path, r.task_id)
        acked.append(r.task_id)

    waves = []
    for _ in range(20):  # each wave's commit starts while the previous one may still run
        waves.append(asyncio.ensure_future(asyncio.gather(*(ack(record("pool_000000000001")) for _ in range(25)))))
        await asyncio.sleep(0)
    await asyncio.gather(*waves)
    assert len(acked) == 500 == len(set(acked))
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 500
    finally:
        db.close()
    assert store.settled
    store.close()


async def test_an_outcome_is_durable_once_its_own_commit_lands(tmp_path: Path) -> None:
    """durable(generation) waits for the commit holding that generation's writes, not later ones."""
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    batch = [record("pool_000000000001") for _ in range(THREAD_BATCH)]  # committed in the writer thread
    for r in batch:
        store.insert_task(r)
    first = batch[-1]
    generation = store.generation
    flight = asyncio.ensure_future(store.durable())
    while store.generation == generation:  # until the group commit of `first` has started
        await asyncio.sleep(0)
    later = record("pool_000000000001")
    store.insert_task(later)  # the next generation
    await store.durable(generation)
    assert committed(store.path, first.task_id)
    await flight
    await store.durable()
    assert committed(store.path, later.task_id) and store.settled
    store.close()


async def test_many_task_writes_in_one_commit_are_stored_row_for_row(tmp_path: Path) -> None:
    """A commit of more than CHUNK inserts and ends (several statements of many rows each, and the
    rest row by row) stores every row with its own values."""
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    store.insert_pool("pool_000000000001", "p", {}, "running", time.time())
    records = [record("pool_000000000001") for _ in range(2 * CHUNK + 5)]
    for r in records:
        store.insert_task(r)
    await store.durable()
    states = [TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT]
    for i, r in enumerate(records[:-3]):  # the last three stay queued
        r.state, r.worker_id, r.attempts = states[i % 4], f"worker_{i}", i
        r.started_at = r.finished_at = datetime.now(UTC)
        r.duration_s, r.result, r.error = float(i), {"i": i}, None if i % 4 == 0 else f"error {i}"
        store.mark_finished(r)
    await store.durable()
    db = sqlite3.connect(store.path)
    try:
        got = {row[0]: row[1:] for row in db.execute(
            "SELECT task_id, state, worker_id, attempts, duration, result, error, payload FROM tasks")}
        counts = db.execute("SELECT completed, failed, cancelled, timed_out FROM pools").fetchone()
    finally:
        db.close()
    assert len(got) == len(records)
    for i, r in enumerate(records[:-3]):
        assert got[r.task_id] == (states[i % 4].value, f"worker_{i}", i, float(i), f'{{"i":{i}}}',
                                  None if i % 4 == 0 else f"error {i}", "{}")
    for r in records[-3:]:
        assert got[r.task_id][:3] == ("queued", None, 0)
    n = len(records) - 3
    assert counts == tuple(sum(1 for i in range(n) if i % 4 == k) for k in range(4))
    store.close()


def test_a_trusted_record_lists_its_fields_in_schema_order() -> None:
    """Records built on the hot path serialize like validated ones: same keys, same order."""
    values = {"worker_id": "worker_1", "task_id": new_task_id(), "pool_id": "pool_000000000000",
              "task_type": "echo", "payload": {"x": 1}, "state": TaskState.RUNNING, "created_at": datetime.now(UTC)}
    trusted = TaskRecord.trusted(**values)
    assert list(trusted.model_dump()) == list(TaskRecord.model_fields)
    assert trusted.model_dump_json() == TaskRecord.model_validate(values).model_dump_json()


async def test_the_wal_is_checkpointed_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a loop, commits never run SQLite's automatic checkpoint (a stall of the loop); the
    checkpoint thread copies the WAL back once it has grown, and every row is in the database."""
    monkeypatch.setattr(store_module, "CHECKPOINT_BYTES", 64 << 10)
    store = Store(tmp_path / "db.sqlite", asyncio.get_running_loop())
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    store.insert_pool("pool_000000000001", "p", {}, "running", time.time())
    records = [record("pool_000000000001") for _ in range(400)]
    for r in records:
        r.payload = {"pad": "x" * 500}
        store.insert_task(r)
        await store.durable()  # one commit each: a WAL of several hundred frames
    checkpointer = store._checkpointer
    assert checkpointer is not None
    await wait_until(lambda: checkpointer.checkpoints >= 1, what="a checkpoint in its thread")
    store.close()
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == len(records)
    finally:
        db.close()
    assert not (tmp_path / "db.sqlite-wal").exists()  # the last connection's close checkpointed the rest


def test_a_new_store_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    new = Store(tmp_path / "new.sqlite")
    assert new._db.execute("PRAGMA page_size").fetchone()[0] == store_module.PAGE_SIZE == 2048
    new.close()
    old = sqlite3.connect(tmp_path / "old.sqlite")  # a store made before: 4 KiB pages, WAL
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.close()
    reopened = Store(tmp_path / "old.sqlite")
    reopened.insert_pool("pool_000000000001", "p", {}, "running", time.time())
    assert reopened._db.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert reopened.pool_row("pool_000000000001") is not None
    reopened.close()
