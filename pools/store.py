"""Embedded SQLite store (WAL): pools, tasks with their results, and an event log.

One connection, used only from the event-loop thread that owns the PoolManager.
Statements run at once (so reads on this connection see them) inside one open
transaction; when that transaction commits is the durability contract:

    write ──> open transaction ──┬─ nobody waits: commit COMMIT_DELAY later (a burst of
                                 │  bookkeeping, thousands of updates, becomes one commit)
                                 └─ `await durable()`: commit at the end of this loop
                                    iteration; every waiter of the batch shares it

The per-task writes (a new task, its start, its end, the pool's counters) are buffered
and run kind by kind (many rows per statement) when the transaction commits, or before any other
statement or read on this connection, so they stay in order and every read sees them. A
task that starts and ends within one transaction is written once, with its end; one that
is new in that transaction is inserted as it stands at the commit (one row written, and
each index touched once, instead of an insert and then an update).

With a loop, SQLite's automatic checkpoint (copying the WAL back into the database and
syncing both, every ~1,000 pages) is off on this connection: it ran inside whichever commit
crossed the line, a stall of the event loop of many milliseconds. A thread of its own with a
connection of its own checkpoints instead (PASSIVE: writers go on meanwhile) once the WAL
has grown past the same size.

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
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
-- retention prunes by tasks_created (a task ends after it was made), one index less on every write
DROP INDEX IF EXISTS tasks_finished;
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


COMMIT_DELAY = 0.005  # seconds unacknowledged bookkeeping may wait for its commit
PAGE_SIZE = 2048  # bytes, for a new database
THREAD_BATCH = 16  # buffered task writes from which a group commit runs in the writer thread
CHECKPOINT_BYTES = 4 << 20  # WAL size from which the checkpoint thread copies it back (SQLite's default)
CHECKPOINT_CHECK_EVERY = 16  # commits between looks at the WAL's size

log = logging.getLogger("mahavishnu.pools")

_TASK_COLUMNS = ("task_id", "pool_id", "task_type", "payload", "state", "worker_id", "created_at", "started_at",
                 "finished_at", "duration", "result", "summary", "error", "timeout", "attempts", "retries",
                 "pool_fault")
# Where a buffered insert keeps what a start or an end in the same transaction sets.
_STATE, _WORKER, _STARTED, _FINISHED, _DURATION, _RESULT, _SUMMARY, _ERROR, _ATTEMPTS, _FAULT = (
    4, 5, 7, 8, 9, 10, 11, 12, 14, 16)
_INSERT_TASK = f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) VALUES ({', '.join('?' * len(_TASK_COLUMNS))})"
_MARK_RUNNING = "UPDATE tasks SET state = 'running', worker_id = ?, started_at = ?, attempts = ? WHERE task_id = ?"
# Many rows per statement: the writer thread takes the GIL back once per statement, not once per
# row (executemany lets go of it around each row's step, and each time it wants it back it may
# wait for the busy event loop's switch interval). Full chunks of CHUNK rows; the rest row by row.
CHUNK = 32
_INSERT_TASKS = (f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) VALUES "
                 + ", ".join([f"({', '.join('?' * len(_TASK_COLUMNS))})"] * CHUNK))
_MARK_FINISHED_MANY = (  # VALUES columns are column1..column11, in _MARK_FINISHED's parameter order
    "UPDATE tasks SET state = v.column1, worker_id = v.column2, started_at = v.column3, finished_at = v.column4, "
    "duration = v.column5, result = v.column6, summary = v.column7, error = v.column8, attempts = v.column9, "
    "pool_fault = v.column10 FROM (VALUES " + ", ".join([f"({', '.join('?' * 11)})"] * CHUNK)
    + ") AS v WHERE tasks.task_id = v.column11")
_MARK_FINISHED = ("UPDATE tasks SET state = ?, worker_id = ?, started_at = ?, finished_at = ?, duration = ?, "
                  "result = ?, summary = ?, error = ?, attempts = ?, pool_fault = ? WHERE task_id = ?")
_COUNT = ("UPDATE pools SET completed = completed + ?, failed = failed + ?, cancelled = cancelled + ?, "
          "timed_out = timed_out + ?, duration_sum = duration_sum + ?, duration_n = duration_n + ? WHERE pool_id = ?")
# Buffered task writes: inserts, starts, ends (by task id), pool counter deltas (by pool id).
Buffered = tuple[list[list[Any]], dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]],
                 dict[str, list[float]]]
# A terminal state's place among a pool's counter deltas (and _COUNT's parameters).
_COUNTER_INDEX = {TaskState.COMPLETED: 0, TaskState.FAILED: 1, TaskState.CANCELLED: 2, TaskState.TIMED_OUT: 3}


def _in_chunks(db: sqlite3.Connection, chunk_sql: str, row_sql: str, rows: list[Any]) -> None:
    """Rows (unique by task id) in statements of CHUNK rows, the rest with executemany."""
    full = len(rows) - len(rows) % CHUNK
    for start in range(0, full, CHUNK):
        db.execute(chunk_sql, [value for row in rows[start:start + CHUNK] for value in row])
    if full < len(rows):
        db.executemany(row_sql, rows[full:])


def _ts(value: Any) -> float | None:
    return None if value is None else value.timestamp()


class Checkpointer:
    """Copies the WAL back into the database in a thread of its own, on a connection of its own,
    when the WAL has grown past CHECKPOINT_BYTES (PASSIVE: it never waits for nor blocks a
    writer; SQLite lets go of the GIL while it copies and syncs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal = path.with_name(path.name + "-wal")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="mahavishnu-checkpoint")
        self._db: sqlite3.Connection | None = None  # opened in the thread, on its first checkpoint
        self._running: Future[None] | None = None
        self.checkpoints = 0

    def check(self) -> None:
        """On the loop: start a checkpoint if the WAL is large and none is under way."""
        if self._running is not None and not self._running.done():
            return
        try:
            if self.wal.stat().st_size < CHECKPOINT_BYTES:
                return
        except FileNotFoundError:
            return
        self._running = self._thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._db is None:
                self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # the next look tries again; the WAL only grows meanwhile
            log.warning("checkpoint of the state database failed: %s", exc)

    def close(self) -> None:
        """Wait for a checkpoint under way and close the connection (the store's own close then
        checkpoints what is left, as the last connection)."""
        def close_db() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._thread.submit(close_db)
        self._thread.shutdown(wait=True)


class Store:
    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Without a loop every write commits at once (tools, tests); with one, see the module doc."""
        private_database(path)  # 0600 in a 0700 directory, whatever the umask (pools/private.py)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # A new database gets 2 KiB pages (an existing one keeps its own): a commit writes one WAL frame
        # per page it touched, one per index for a new task, so smaller pages mean fewer bytes per
        # commit. Measured: one finished task's commit 53 -> 38 us; a 2,500-item shard's 94 -> 88 us
        # (1 KiB pages made those slower: more overflow pages).
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._loop = loop
        # The commits a loop waits for run in this thread, so the event loop goes on meanwhile
        # (SQLite lets go of the GIL while it writes); the loop thread uses the connection only
        # when no such commit is under way (_sync), so it is never used by two threads at once.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="mahavishnu-store") if loop else None
        self._checkpointer: Checkpointer | None = None
        if loop is not None:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = Checkpointer(path)
        self._in_tx = False  # the loop thread ran BEGIN: statements of the next commit ran already
        self._pending = False  # writes (run or buffered) wait for a commit
        self.generation = 1  # the commit that will hold the writes made now
        self.committed = 0  # every commit up to this generation is done
        self._lazy: asyncio.TimerHandle | None = None  # the delayed commit of unacknowledged writes
        self._soon: asyncio.Handle | None = None  # the group commit someone waits for
        self._waiters: list[asyncio.Future[None]] = []  # for the next commit
        self._flight: Future[None] | None = None  # a commit running in the writer thread ...
        self._flight_waiters: list[asyncio.Future[None]] = []  # ... who waits for it ...
        self._flight_generation = 0  # ... and which generation it commits
        self._again = False  # a commit was asked for while one ran: start it when that one lands
        self.commits = 0
        self.on_commit: list[Callable[[], None]] = []  # run after each commit (caches of what is unsettled)
        # Buffered task writes of the next commit (see the module doc), run by _sync() or the commit.
        self._inserts: list[list[Any]] = []  # new rows, as they stand (a start or an end updates them)
        self._inserted: dict[str, list[Any]] = {}  # ... by task id
        self._running: dict[str, tuple[Any, ...]] = {}
        self._finished: dict[str, tuple[Any, ...]] = {}
        self._counts: dict[str, list[float]] = {}  # pool id -> [completed, failed, cancelled, timed_out, sum, n]
        self.memory = MemoryLog(self._db, self._write, self._sync)

    # -- transactions -------------------------------------------------------------------
    def _sync(self) -> None:
        """Before the loop thread runs a statement or a read: let a commit under way land, then
        run the buffered task writes (in the open transaction), so reads see every write."""
        if self._flight is not None:
            self._land(self._flight)
        if self._inserts or self._running or self._finished or self._counts:
            self._begin()
            self._run_buffered(self._take_buffered())

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True
            self._mark_pending()

    def _mark_pending(self) -> None:
        self._pending = True
        if self._loop is not None and self._lazy is None:
            self._lazy = self._loop.call_later(COMMIT_DELAY, self._lazy_commit)

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        self._sync()  # buffered task writes first: statements run in the order they were made
        self._begin()
        cur = self._db.execute(sql, params)
        if self._loop is None:
            self.commit()
        return cur

    def _buffered(self) -> None:
        """A task write was buffered: it belongs to the next commit (without a loop: commit now)."""
        self._mark_pending()
        if self._loop is None:
            self.commit()

    def _take_buffered(self) -> Buffered:
        taken = (self._inserts, self._running, self._finished, self._counts)
        self._inserts, self._running, self._finished, self._counts = [], {}, {}, {}
        self._inserted = {}
        return taken

    def _run_buffered(self, buffered: Buffered) -> None:
        """Kind by kind, in the order a task goes through them (insert, start, end); then the
        pools' counters."""
        inserts, running, finished, counts = buffered
        db = self._db
        if inserts:
            _in_chunks(db, _INSERT_TASKS, _INSERT_TASK, inserts)
        if running:
            db.executemany(_MARK_RUNNING, running.values())
        if finished:
            _in_chunks(db, _MARK_FINISHED_MANY, _MARK_FINISHED, list(finished.values()))
        if counts:
            db.executemany(_COUNT, [(*c, pool_id) for pool_id, c in counts.items()])

    def _commit_work(self, buffered: Buffered, in_tx: bool) -> None:
        """The writes of one generation, committed (in the writer thread, or the caller's)."""
        try:
            if not in_tx:
                self._db.execute("BEGIN")
            self._run_buffered(buffered)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _unschedule(self) -> None:
        """Drop the delayed and the group commit: the commit being made holds their writes."""
        for handle in (self._lazy, self._soon):
            if handle is not None:
                handle.cancel()
        self._lazy = self._soon = None

    def _take_generation(self) -> tuple[Buffered, bool, int]:
        """What the next commit holds; writes from now on belong to the one after it."""
        self._unschedule()
        work = (self._take_buffered(), self._in_tx, self.generation)
        self._in_tx = self._pending = False
        self.generation += 1
        return work

    def commit(self) -> None:
        """Commit everything written so far now, on this thread, and release everyone waiting."""
        if self._flight is not None:
            self._land(self._flight)
        waiters, self._waiters = self._waiters, []
        if not self._pending:
            self._unschedule()
            self._release(waiters, None)
            return
        buffered, in_tx, generation = self._take_generation()
        try:
            self._commit_work(buffered, in_tx)
        except sqlite3.Error as exc:  # e.g. disk full: nothing of this batch may be acknowledged
            self._release(waiters, exc)
            if not waiters:
                raise StoreFailure(f"the state database could not commit: {exc}") from exc
            return
        self._committed(generation)
        self._release(waiters, None)

    def _lazy_commit(self) -> None:
        self._lazy = None
        self._commit_soon()

    def _group_commit(self) -> None:
        self._soon = None
        self._commit_soon()

    def _commit_soon(self) -> None:
        """The group commit (timer or end of a loop iteration): in the writer thread, while the
        loop goes on. One at a time; one asked for meanwhile starts when it lands."""
        if self._writer is None:  # pragma: no cover - without a loop every write already committed
            self.commit()
            return
        if self._flight is not None:
            self._again = True
            return
        if len(self._inserts) + len(self._running) + len(self._finished) < THREAD_BATCH:
            self.commit()  # a lone acknowledgement: the hand-over to a thread would cost more than it saves
            return
        waiters, self._waiters = self._waiters, []
        buffered, in_tx, generation = self._take_generation()
        flight = self._writer.submit(self._commit_work, buffered, in_tx)
        self._flight, self._flight_waiters, self._flight_generation = flight, waiters, generation
        loop = self._loop
        assert loop is not None
        flight.add_done_callback(lambda f: loop.call_soon_threadsafe(self._land, f))

    def _land(self, flight: Future[None]) -> None:
        """A commit of the writer thread ended (or the loop thread needs the connection: wait for it)."""
        if self._flight is not flight:
            return  # landed already
        error: BaseException | None = None
        try:
            flight.result()
        except Exception as exc:  # sqlite3.Error (disk full ...): nothing of it may be acknowledged
            error = exc
        waiters = self._flight_waiters
        self._flight, self._flight_waiters = None, []
        if error is None:
            self._committed(self._flight_generation)
        elif not waiters:
            log.error("the state database could not commit: %s", error)
        self._release(waiters, error)
        if (self._again or self._waiters) and self._soon is None:
            assert self._loop is not None
            self._soon = self._loop.call_soon(self._group_commit)
        self._again = False

    def _committed(self, generation: int) -> None:
        self.committed = generation
        self.commits += 1
        if self._checkpointer is not None and self.commits % CHECKPOINT_CHECK_EVERY == 0:
            self._checkpointer.check()
        for hook in self.on_commit:
            hook()

    @staticmethod
    def _release(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(StoreFailure(f"the state database could not commit: {error}"))

    @property
    def settled(self) -> bool:
        """True when no write is waiting for its commit."""
        return not self._pending and self._flight is None

    async def durable(self, generation: int | None = None) -> None:
        """Return once every write made so far is committed (given a `generation`: the writes made
        while it was current). Concurrent callers share one commit (group commit), started once
        this loop iteration's callbacks are done: under a stream of callers each iteration's batch
        is one commit, so commits grow slower than throughput."""
        if self.settled or (generation is not None and generation <= self.committed):
            return
        if self._loop is None:  # pragma: no cover - without a loop every write already committed
            self.commit()
            return
        waiter = self._loop.create_future()
        if not self._pending or (generation is not None and self._flight is not None
                                 and generation <= self._flight_generation):
            # all of it is in the commit under way
            self._flight_waiters.append(waiter)
        else:
            self._waiters.append(waiter)
            if self._soon is None and self._flight is None:
                # Not a timer: a wait under a millisecond is rounded up to one by the selector, and that
                # was most of what a lone execute paid over a ping. Waiters that arrive together (their
                # wake-ups run in one loop iteration) still share this commit.
                self._soon = self._loop.call_soon(self._group_commit)
            elif self._flight is not None:
                self._again = True
        await waiter

    def commit_soon(self) -> None:
        """Commit first thing next loop iteration, without waiting: for an outcome someone waits
        for, called before the waiter is woken, so the commit runs before it does and its
        durable() returns at once (two loop iterations fewer than a commit it asks for). Every
        outcome that arrives in this iteration shares the commit."""
        if not self._pending or self._loop is None:
            return
        if self._flight is not None:
            self._again = True  # the commit under way starts the next one when it lands
        elif self._soon is None:
            self._soon = self._loop.call_soon(self._group_commit)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several writes and commit them together now."""
        yield
        self.commit()

    def close(self) -> None:
        self.commit()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
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
        self._sync()
        return list(self._db.execute("SELECT * FROM pools WHERE closed_at IS NULL ORDER BY created_at"))

    def pool_row(self, pool_id: str) -> sqlite3.Row | None:
        self._sync()
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM pools WHERE pool_id = ?", (pool_id,)).fetchone()
        return row

    # -- tasks --------------------------------------------------------------------------
    def insert_task(self, task: TaskRecord, payload_text: str | None = None) -> None:
        """`payload_text`: jsontext.dumps(task.payload), when the caller has it already."""
        row = [
            task.task_id, task.pool_id, task.task_type,
            jsontext.dumps(task.payload) if payload_text is None else payload_text, task.state.value,
            task.worker_id, task.created_at.timestamp(), _ts(task.started_at), _ts(task.finished_at),
            task.duration_s, None, None, None, task.timeout, task.attempts, task.retries, int(task.pool_fault)]
        self._inserts.append(row)  # (an id inserted twice stays twice: the commit fails, as it must)
        self._inserted[task.task_id] = row
        self._buffered()

    def mark_running(self, task_id: str, worker_id: str, started_at: float, attempts: int) -> None:
        row = self._inserted.get(task_id)
        if row is not None:  # new in this transaction: it is inserted running
            row[_STATE], row[_WORKER], row[_STARTED], row[_ATTEMPTS] = "running", worker_id, started_at, attempts
        else:
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
        ended = (task.state.value, task.worker_id, _ts(task.started_at), _ts(task.finished_at), task.duration_s,
                 result, task.summary, task.error, task.attempts, int(task.pool_fault))
        row = self._inserted.get(task_id)
        if row is not None:  # new in this transaction: it is inserted as it ended
            (row[_STATE], row[_WORKER], row[_STARTED], row[_FINISHED], row[_DURATION], row[_RESULT], row[_SUMMARY],
             row[_ERROR], row[_ATTEMPTS], row[_FAULT]) = ended
        else:
            self._finished[task_id] = (*ended, task_id)
        counts = self._counts.get(task.pool_id)
        if counts is None:
            counts = self._counts[task.pool_id] = [0, 0, 0, 0, 0.0, 0]
        counts[_COUNTER_INDEX[task.state]] += 1
        if task.duration_s is not None and task.state is TaskState.COMPLETED:
            counts[4] += task.duration_s
            counts[5] += 1
        self._buffered()
        return 0 if result is None else len(result)

    def pool_count(self) -> int:
        """Pools ever registered here, closed ones too."""
        self._sync()
        return int(self._db.execute("SELECT count(*) FROM pools").fetchone()[0])

    def pool_totals(self) -> sqlite3.Row:
        """Every pool's counters summed (closed pools too: they are history)."""
        self._sync()
        row: sqlite3.Row = self._db.execute(
            "SELECT sum(completed), sum(failed), sum(cancelled), sum(timed_out), sum(duration_sum), "
            "sum(duration_n) FROM pools").fetchone()
        return row

    def task_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids that begin with `prefix` (a range on the primary key: hex digits sort below 'g')."""
        self._sync()
        rows = self._db.execute("SELECT task_id FROM tasks WHERE task_id >= ? AND task_id < ? ORDER BY task_id "
                                "LIMIT ?", (prefix, prefix + "g", limit)).fetchall()
        return [str(r[0]) for r in rows]

    def task_row(self, task_id: str) -> sqlite3.Row | None:
        self._sync()
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return row

    def task_text(self, task_id: str, column: str, offset: int, length: int) -> tuple[int, str] | None:
        """(size, slice) of a task's stored JSON result or payload, in bytes of its UTF-8 text, read
        with incremental blob I/O: a large value is served in pages, never loaded whole. A slice
        ends on a character boundary. None when there is no such task."""
        if column not in ("result", "payload"):
            raise ValueError(column)
        self._sync()
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
        self._sync()
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
        self._sync()
        return list(self._db.execute(f"SELECT * FROM tasks {clause}ORDER BY created_at DESC LIMIT ?",
                                     (*params, limit)))

    def prune(self, finished_before: float) -> int:
        # A task finished before the cutoff was made before it too: the range on created_at (indexed)
        # holds every row to delete, and few others (tasks made then and still unfinished).
        cur = self._write("DELETE FROM tasks WHERE created_at < ? AND finished_at IS NOT NULL AND finished_at < ?",
                          (finished_before, finished_before))
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
        self._sync()
        if pool_id:
            return list(self._db.execute(
                "SELECT * FROM events WHERE pool_id = ? ORDER BY id DESC LIMIT ?", (pool_id, limit)))
        return list(self._db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)))

    def explain(self, sql: str, params: tuple[Any, ...] = ()) -> list[str]:
        """The query plan, for tests that keep hot queries on an index."""
        self._sync()
        return [row[3] for row in self._db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
