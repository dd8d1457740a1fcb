"""Embedded SQLite store (WAL): pools, tasks with their results, and an event log.

One connection, used only from the event-loop thread that owns the PoolManager.
Statements run at once (so reads on this connection see them) inside one open
transaction; when that transaction commits is the durability contract:

    write ──> open transaction ──┬─ nobody waits: commit COMMIT_DELAY later (a burst of
                                 │  bookkeeping, thousands of updates, becomes one commit)
                                 └─ `await durable()`: commit at the end of this loop
                                    iteration; every waiter of the batch shares it

The per-task writes (a new task, its start, its end, the pool's counters) are buffered
and run as one executemany per kind when the transaction commits, or before any other
statement or read on this connection, so they stay in order and every read sees them. A
task that starts and ends within one transaction is written once, with its end.

Anything acknowledged to a caller (a task id, a result) is awaited with `durable()`
first, so a process crash loses nothing acknowledged: a committed WAL transaction is
in the operating system's hands. With `synchronous=NORMAL` the WAL is fsynced at
checkpoints, not at every commit, so a power loss or kernel crash may lose the last
commits (never corrupts the database). Per-pool counters are kept beside the pool row
so stats never scan the task table.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pools import jsontext
from pools.errors import Conflict, StoreFailure
from pools.memory import MemoryLog
from pools.models import TaskRecord, TaskState
from pools.private import private_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    pool_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at REAL NOT NULL,
    closed_at REAL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    timed_out INTEGER NOT NULL DEFAULT 0,
    duration_sum REAL NOT NULL DEFAULT 0,
    duration_n INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS pools_open_name ON pools(name) WHERE closed_at IS NULL;
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL,
    task_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    worker_id TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration REAL,
    result TEXT,
    summary TEXT,
    error TEXT,
    timeout REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    pool_fault INTEGER NOT NULL DEFAULT 0,
    indexed INTEGER NOT NULL DEFAULT 0,
    synced_at REAL
);
CREATE INDEX IF NOT EXISTS tasks_state_created ON tasks(state, created_at);
CREATE INDEX IF NOT EXISTS tasks_pool_state_created ON tasks(pool_id, state, created_at);
CREATE INDEX IF NOT EXISTS tasks_pool_created ON tasks(pool_id, created_at);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks(created_at);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
-- what a restart reconciles, in submission order, without sorting every unfinished task
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks(created_at) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    pool_id TEXT,
    task_id TEXT,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_pool ON events(pool_id, id);
"""

_COUNTER_COLUMN = {
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.TIMED_OUT: "timed_out",
}

COMMIT_DELAY = 0.005  # seconds unacknowledged bookkeeping may wait for its commit

_TASK_COLUMNS = ("task_id", "pool_id", "task_type", "payload", "state", "worker_id", "created_at", "started_at",
                 "finished_at", "duration", "result", "summary", "error", "timeout", "attempts", "retries")
_INSERT_TASK = f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) VALUES ({', '.join('?' * len(_TASK_COLUMNS))})"
_MARK_RUNNING = "UPDATE tasks SET state = 'running', worker_id = ?, started_at = ?, attempts = ? WHERE task_id = ?"
_MARK_FINISHED = ("UPDATE tasks SET state = ?, worker_id = ?, started_at = ?, finished_at = ?, duration = ?, "
                  "result = ?, summary = ?, error = ?, attempts = ?, pool_fault = ? WHERE task_id = ?")
_COUNT = ("UPDATE pools SET completed = completed + ?, failed = failed + ?, cancelled = cancelled + ?, "
          "timed_out = timed_out + ?, duration_sum = duration_sum + ?, duration_n = duration_n + ? WHERE pool_id = ?")
_COUNTER_INDEX = {state: i for i, state in enumerate(_COUNTER_COLUMN)}


def _ts(value: Any) -> float | None:
    return None if value is None else value.timestamp()


class Store:
    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Without a loop every write commits at once (tools, tests); with one, see the module doc."""
        private_database(path)  # 0600 in a 0700 directory, whatever the umask (pools/private.py)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._in_tx = False
        self._loop = loop
        self._lazy: asyncio.TimerHandle | None = None  # the delayed commit of unacknowledged writes
        self._soon: asyncio.Handle | None = None  # the group commit someone waits for
        self._waiters: list[asyncio.Future[None]] = []
        self.commits = 0
        self.on_commit: list[Callable[[], None]] = []  # run after each commit (caches of what is unsettled)
        # Buffered task writes of the open transaction (see the module doc), run by _flush().
        self._inserts: list[tuple[Any, ...]] = []
        self._running: dict[str, tuple[Any, ...]] = {}
        self._finished: dict[str, tuple[Any, ...]] = {}
        self._counts: dict[str, list[float]] = {}  # pool id -> [completed, failed, cancelled, timed_out, sum, n]
        self.memory = MemoryLog(self._db, self._write, self._flush)

    # -- transactions -------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True
            if self._loop is not None:
                self._lazy = self._loop.call_later(COMMIT_DELAY, self.commit)

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        self._begin()
        self._flush()  # buffered task writes first: statements run in the order they were made
        cur = self._db.execute(sql, params)
        if self._loop is None:
            self.commit()
        return cur

    def _buffered(self) -> None:
        """A task write was buffered: it belongs to the open transaction (without a loop: commit now)."""
        self._begin()
        if self._loop is None:
            self.commit()

    def _flush(self) -> None:
        """Run the buffered task writes, one executemany per kind, in the order a task goes through
        them (insert, start, end); then the pools' counters."""
        db = self._db
        if self._inserts:
            inserts, self._inserts = self._inserts, []
            db.executemany(_INSERT_TASK, inserts)
        if self._running:
            running, self._running = self._running, {}
            db.executemany(_MARK_RUNNING, running.values())
        if self._finished:
            finished, self._finished = self._finished, {}
            db.executemany(_MARK_FINISHED, finished.values())
        if self._counts:
            counts, self._counts = self._counts, {}
            db.executemany(_COUNT, [(*c, pool_id) for pool_id, c in counts.items()])

    def commit(self) -> None:
        """Commit the open transaction now and release everyone waiting on it."""
        for handle in (self._lazy, self._soon):
            if handle is not None:
                handle.cancel()
        self._lazy = self._soon = None
        waiters, self._waiters = self._waiters, []
        error: BaseException | None = None
        if self._in_tx:
            self._in_tx = False
            try:
                self._flush()
                self._db.execute("COMMIT")
                self.commits += 1
                for hook in self.on_commit:
                    hook()
            except sqlite3.Error as exc:  # e.g. disk full: nothing of this batch may be acknowledged
                error = exc
                self._inserts, self._running, self._finished, self._counts = [], {}, {}, {}
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(StoreFailure(f"the state database could not commit: {error}"))
        if error is not None and not waiters:
            raise StoreFailure(f"the state database could not commit: {error}") from error

    @property
    def settled(self) -> bool:
        """True when no write is waiting for its commit."""
        return not self._in_tx

    async def durable(self) -> None:
        """Return once every write made so far is committed. Concurrent callers share one commit
        (group commit), run once this loop iteration's callbacks are done: under a stream of
        callers each iteration's batch is one commit, so commits grow slower than throughput."""
        if not self._in_tx:
            return
        if self._loop is None:  # pragma: no cover - without a loop every write already committed
            self.commit()
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        if self._soon is None:
            # Not a timer: a wait under a millisecond is rounded up to one by the selector, and that
            # was most of what a lone execute paid over a ping. Waiters that arrive together (their
            # wake-ups run in one loop iteration) still share this commit.
            self._soon = self._loop.call_soon(self.commit)
        await waiter

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several writes and commit them together now."""
        yield
        self.commit()

    def close(self) -> None:
        self.commit()
        self._db.close()

    # -- pools --------------------------------------------------------------------------
    def insert_pool(self, pool_id: str, name: str, config: dict[str, Any], status: str, created_at: float) -> None:
        try:
            self._write(
                "INSERT INTO pools (pool_id, name, config, status, created_at) VALUES (?, ?, ?, ?, ?)",
                (pool_id, name, json.dumps(config), status, created_at),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a pool named {name!r} already exists; choose another name or close it first",
                           field="name") from exc

    def set_pool_status(self, pool_id: str, status: str, reason: str | None) -> None:
        self._write("UPDATE pools SET status = ?, status_reason = ? WHERE pool_id = ?", (status, reason, pool_id))

    def set_pool_config(self, pool_id: str, config: dict[str, Any]) -> None:
        self._write("UPDATE pools SET config = ? WHERE pool_id = ?", (json.dumps(config), pool_id))

    def close_pool(self, pool_id: str, reason: str) -> None:
        self._write("UPDATE pools SET status = 'stopped', status_reason = ?, closed_at = ? WHERE pool_id = ?",
                    (reason, time.time(), pool_id))

    def open_pools(self) -> list[sqlite3.Row]:
        self._flush()
        return list(self._db.execute("SELECT * FROM pools WHERE closed_at IS NULL ORDER BY created_at"))

    def pool_row(self, pool_id: str) -> sqlite3.Row | None:
        self._flush()
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM pools WHERE pool_id = ?", (pool_id,)).fetchone()
        return row

    # -- tasks --------------------------------------------------------------------------
    def insert_task(self, task: TaskRecord, payload_text: str | None = None) -> None:
        """`payload_text`: jsontext.dumps(task.payload), when the caller has it already."""
        self._inserts.append(
            (task.task_id, task.pool_id, task.task_type,
             jsontext.dumps(task.payload) if payload_text is None else payload_text, task.state.value,
             task.worker_id, task.created_at.timestamp(), _ts(task.started_at), _ts(task.finished_at),
             task.duration_s, None, None, None, task.timeout, task.attempts, task.retries))
        self._buffered()

    def mark_running(self, task_id: str, worker_id: str, started_at: float, attempts: int) -> None:
        self._running[task_id] = (worker_id, started_at, attempts, task_id)
        self._buffered()

    def mark_queued(self, task_id: str, pool_id: str) -> None:
        self._write("UPDATE tasks SET state = 'queued', pool_id = ?, worker_id = NULL, started_at = NULL, "
                    "error = NULL WHERE task_id = ?", (pool_id, task_id))

    def mark_abandoned(self, task_id: str, reason: str) -> None:
        """An owner stopping leaves a running task to the next owner, saying why (error column;
        the state stays running, for reconciliation)."""
        self._write("UPDATE tasks SET error = ? WHERE task_id = ?", (reason, task_id))

    def mark_finished(self, task: TaskRecord) -> int:
        """Record a terminal state, its result, and bump the pool's counters in one go; returns the
        length of the result's JSON text (0 for none)."""
        result = None if task.result is None else jsontext.dumps(task.result)
        task_id = task.task_id
        self._running.pop(task_id, None)  # this write sets everything the start would have
        self._finished[task_id] = (
            task.state.value, task.worker_id, _ts(task.started_at), _ts(task.finished_at), task.duration_s,
            result, task.summary, task.error, task.attempts, int(task.pool_fault), task_id)
        counts = self._counts.get(task.pool_id)
        if counts is None:
            counts = self._counts[task.pool_id] = [0, 0, 0, 0, 0.0, 0]
        counts[_COUNTER_INDEX[task.state]] += 1
        if task.duration_s is not None and task.state is TaskState.COMPLETED:
            counts[4] += task.duration_s
            counts[5] += 1
        self._buffered()
        return 0 if result is None else len(result)

    def pool_totals(self) -> sqlite3.Row:
        """Every pool's counters summed (closed pools too: they are history)."""
        self._flush()
        row: sqlite3.Row = self._db.execute(
            "SELECT sum(completed), sum(failed), sum(cancelled), sum(timed_out), sum(duration_sum), "
            "sum(duration_n) FROM pools").fetchone()
        return row

    def task_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids that begin with `prefix` (a range on the primary key: hex digits sort below 'g')."""
        self._flush()
        rows = self._db.execute("SELECT task_id FROM tasks WHERE task_id >= ? AND task_id < ? ORDER BY task_id "
                                "LIMIT ?", (prefix, prefix + "g", limit)).fetchall()
        return [str(r[0]) for r in rows]

    def task_row(self, task_id: str) -> sqlite3.Row | None:
        self._flush()
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return row

    def task_text(self, task_id: str, column: str, offset: int, length: int) -> tuple[int, str] | None:
        """(size, slice) of a task's stored JSON result or payload, in bytes of its UTF-8 text, read
        with incremental blob I/O: a large value is served in pages, never loaded whole. A slice
        ends on a character boundary. None when there is no such task."""
        if column not in ("result", "payload"):
            raise ValueError(column)
        self._flush()
        row = self._db.execute("SELECT rowid FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            return None
        try:
            blob = self._db.blobopen("tasks", column, row[0], readonly=True)
        except sqlite3.OperationalError:  # the value is NULL
            return 0, ""
        with blob:
            size = len(blob)
            blob.seek(min(offset, size))
            chunk = blob.read(length)
        for cut in range(4):  # a UTF-8 character is at most 4 bytes: drop a split one's head
            try:
                return size, chunk[: len(chunk) - cut].decode()
            except UnicodeDecodeError:
                continue
        raise ValueError(f"task {task_id}'s {column} is not UTF-8 text at byte {offset}")

    def unfinished_tasks(self) -> list[sqlite3.Row]:
        self._flush()
        return list(self._db.execute(
            # The planner would take tasks_state_created and sort; this index is already in order.
            "SELECT * FROM tasks INDEXED BY tasks_unfinished WHERE state IN ('queued', 'running') "
            "ORDER BY created_at"))

    def recent_tasks(self, pool_id: str | None, limit: int, state: str | None = None,
                     task_type: str | None = None) -> list[sqlite3.Row]:
        where, params = [], []
        for column, value in (("pool_id", pool_id), ("state", state), ("task_type", task_type)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        self._flush()
        return list(self._db.execute(f"SELECT * FROM tasks {clause}ORDER BY created_at DESC LIMIT ?",
                                     (*params, limit)))

    def prune(self, finished_before: float) -> int:
        cur = self._write("DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?", (finished_before,))
        self._write("DELETE FROM events WHERE ts < ?", (finished_before,))
        if cur.rowcount:
            # The memory index holds no copy of the rows, so rebuild it rather than track deletions.
            self._write("INSERT INTO memory_fts(memory_fts) VALUES ('delete-all')", ())
            self._write("UPDATE tasks SET indexed = 0 WHERE indexed = 1", ())
        self.commit()
        return cur.rowcount

    # -- events -------------------------------------------------------------------------
    def add_event(self, kind: str, pool_id: str | None = None, task_id: str | None = None,
                  data: dict[str, Any] | None = None) -> None:
        self._write("INSERT INTO events (ts, kind, pool_id, task_id, data) VALUES (?, ?, ?, ?, ?)",
                    (time.time(), kind, pool_id, task_id, json.dumps(data) if data else None))

    def events(self, limit: int = 100, pool_id: str | None = None) -> list[sqlite3.Row]:
        if pool_id:
            return list(self._db.execute(
                "SELECT * FROM events WHERE pool_id = ? ORDER BY id DESC LIMIT ?", (pool_id, limit)))
        return list(self._db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)))

    def explain(self, sql: str, params: tuple[Any, ...] = ()) -> list[str]:
        """The query plan, for tests that keep hot queries on an index."""
        return [row[3] for row in self._db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
