"""The `mahavishnu` pool type: worker processes on this machine.

    submit(job) ──> queue (deque) ──> _pump() ──> worker (holds up to DEPTH) ──socket──> worker_process
                        ▲                │                                              │ run, in order
                        │ not started,   │ all workers full and                         ▼
                        │ or retry after └─> spawn up to max_workers            STARTED / DONE / EOF
                        │ a crash                                                       │
    sink.task_finished <┴──────────────────── _on_readable (event-loop reader) <────────┘

Each worker runs one task at a time and stays up between tasks. It is handed the next job
before the current one ends (pipelining: it never waits for the event loop between tasks);
it announces each start, so the one job it runs is always known. A cancel of a job handed
over but not started is a message that removes it; a cancel or timeout of the running job
kills the worker; a worker that dies fails (or retries) only the job it ran, and the jobs
it held but had not started go back to the front of the queue, in order. An idle worker
takes back a job waiting behind a long one at another worker. The pool grows toward
max_workers while tasks wait and shrinks to min_workers after idle_timeout. A timeout
or a cancel kills the worker and everything it started, and starts a replacement; a
worker that dies mid-task fails (or retries) its task with the exit status, and a pool
whose workers keep dying turns degraded. Each worker process is watched through a pidfd
and reaped the moment it exits, however it ended (no zombies after any churn); how a
worker makes sure nothing it started outlives it is in worker_process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from itertools import count
from typing import Any

import psutil

from pools.backends.base import BackendSnapshot, Job, JobQueue, PoolBackend, TaskSink
from pools.backends.framing import Channel, frame
from pools.backends.worker_process import CANCEL, DONE, JOB, READY, SKIPPED, STARTED, STOP
from pools.errors import PoolUnavailable
from pools.models import PoolConfig, PoolStatus, TaskState, WorkerInfo

SPAWN_READY_TIMEOUT = 30.0
DEPTH = 32  # jobs a worker holds at once: the one it runs and the next ones, sent in one write
# ... and at most this much of their messages (a job to a worker that holds none may be larger): well
# under a socket's send buffer, so a hand-over never blocks the event loop on a worker busy with a
# long task (before this budget, eight large payloads behind one could).
HOLD_BYTES = 64 << 10
OWNER_ENV = "MAHAVISHNU_WORKER_OWNER"  # pid of the process that owns the pool
USAGE_INTERVAL = 1.0  # seconds between psutil samples of a worker


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class _Worker:
    __slots__ = ("worker_id", "proc", "conn", "state", "jobs", "running", "tasks_done", "idle_since", "timer",
                 "deadline", "ps", "started", "usage", "pid", "gone", "recalled")

    def __init__(self, worker_id: str, proc: subprocess.Popen[bytes], conn: Channel) -> None:
        self.worker_id = worker_id
        self.proc = proc  # the keeper on Linux (see worker_process), else the worker itself
        self.pid: int | None = None  # the process that runs tasks, as it reported when ready
        self.conn = conn
        self.state = "starting"  # starting -> idle <-> busy -> stopping (asked) | exiting (on its own)
        self.jobs: deque[Job] = deque()  # handed over and not ended, in the order sent
        self.running: Job | None = None  # the one it announced it started
        # Jobs asked back and not yet answered: task id -> "take" (back to the queue, for an idle
        # worker) or "gone" (cancelled, or moved to another pool: it must not run here).
        self.recalled: dict[str, str] = {}
        self.tasks_done = 0
        self.idle_since = time.monotonic()
        # One timer per worker, not one per job: it fires at or before the running job's deadline
        # and is moved on from there (timeouts are long and jobs short: it rarely fires at all).
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # loop time by which the running job must end
        self.ps: psutil.Process | None = None
        self.usage: tuple[float, float | None, float | None] = (0.0, None, None)  # (when, memory MB, CPU %)
        self.started = asyncio.get_running_loop().create_future()
        self.gone = asyncio.get_running_loop().create_future()  # set once the process is reaped

    def measure(self) -> tuple[float | None, float | None]:
        """Memory and CPU, sampled at most once per USAGE_INTERVAL. Snapshots are read on every
        routing decision and scrape; psutil's CPU figure covers the time since its previous call,
        so sampling on each read would both cost syscalls and shrink that interval to nothing."""
        now = time.monotonic()
        if self.ps is not None and now - self.usage[0] >= USAGE_INTERVAL:
            with contextlib.suppress(psutil.Error):
                self.usage = (now, round(self.ps.memory_info().rss / 1e6, 1), self.ps.cpu_percent(None))
        return self.usage[1], self.usage[2]

    def kill(self) -> None:
        """End the worker and everything it started. With a keeper: the worker dies now and its
        keeper kills and reaps everything below it, then exits; without one: the process group."""
        if self.proc.returncode is not None:
            return
        if self.pid is not None and self.pid != self.proc.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)  # the keeper: covers a worker not yet ready
            return
        self.kill_group()

    def kill_group(self) -> None:
        """The last resort: the session's process group, whatever is in it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class LocalBackend(JobQueue, PoolBackend):
    def __init__(self, pool_id: str, config: PoolConfig, sink: TaskSink, *, context: dict[str, Any],
                 idle_timeout: float = 30.0, crash_window: float = 60.0, crash_threshold: int = 3) -> None:
        PoolBackend.__init__(self, pool_id, config, sink)
        JobQueue.__init__(self)
        self._context_blob = pickle.dumps(context)
        self._idle_timeout = idle_timeout
        self._crash_window = crash_window
        self._crash_threshold = crash_threshold
        self._workers: dict[str, _Worker] = {}
        self._ids = count(1)
        self._crashes: deque[tuple[float, str]] = deque()
        self._target = config.min_workers
        self._closed = False
        self._held = False
        self._pump_scheduled = False
        self._reaper: asyncio.TimerHandle | None = None
        self._spawn_backoff = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        workers = [self._spawn() for _ in range(self.config.min_workers)]
        if workers:
            done = await asyncio.wait([w.started for w in workers], timeout=SPAWN_READY_TIMEOUT)
            if not any(f.done() and not f.exception() for f in done[0]):
                raise PoolUnavailable(
                    f"no worker of pool {self.config.name!r} started "
                    f"({self._last_crash() or f'none ready within {SPAWN_READY_TIMEOUT:.0f}s'})")
        self._schedule_reaper()

    async def close(self, *, abandon: bool = False) -> None:
        self._closed = True
        if self._reaper:
            self._reaper.cancel()
        self._drain_queue(abandon)
        workers = list(self._workers.values())
        for worker in workers:
            if worker.jobs:
                for job in list(worker.jobs):
                    if not abandon and worker.recalled.get(job.task_id) != "gone":
                        ran = job is worker.running
                        self.sink.task_finished(job.task_id, TaskState.CANCELLED, None,
                                                "the pool was closed while the task ran" if ran else
                                                "the pool was closed before it ran", worker.worker_id,
                                                pool_fault=True)
                worker.jobs.clear()
                worker.running = None
                self._retire(worker, graceful=False)
            else:
                self._retire(worker, graceful=True)
        if workers:
            # A graceful stop is one message; give the workers a moment, then end the stragglers.
            await asyncio.wait([w.gone for w in workers], timeout=2.0)
            for worker in workers:
                if not worker.gone.done():
                    worker.kill()
            await asyncio.wait([w.gone for w in workers], timeout=5.0)
            for worker in workers:
                if not worker.gone.done():
                    worker.kill_group()
                    await asyncio.to_thread(worker.proc.wait)
        self._workers.clear()

    # -- tasks ---------------------------------------------------------------------------
    def cancel(self, task_id: str) -> bool:
        if self._cancel_queued(task_id):
            return True
        for worker in list(self._workers.values()):
            job = next((j for j in worker.jobs if j.task_id == task_id), None)
            if job is None or worker.recalled.get(task_id) == "gone":
                continue
            self._read_all(worker)  # what it already said: it may have started or ended the job
            if job not in worker.jobs:
                return True  # it ended meanwhile; the outcome is recorded
            if job is worker.running:
                self._end_running(worker, TaskState.CANCELLED, "cancelled while running; its worker was "
                                  "stopped and replaced")
            else:
                if task_id not in worker.recalled:
                    self._recall(worker, job)
                worker.recalled[task_id] = "gone"
                self.sink.task_finished(task_id, TaskState.CANCELLED, None, "cancelled before it started",
                                        None)
            return True
        return False

    def _recall(self, worker: _Worker, job: Job, why: str = "gone") -> None:
        """Ask a worker to drop a job it holds but has not started. It answers SKIPPED, or it had
        started it (STARTED arrives first): then a cancelled job is stopped by killing the worker,
        and a job taken back for another worker just runs where it is."""
        worker.recalled[job.task_id] = why
        with contextlib.suppress(OSError):  # it is dying: its exit settles the job
            worker.conn.send((CANCEL, job.task_id))
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGUSR1)  # it may be running a long task: read it now

    def hold(self) -> None:
        self._held = True

    def submit(self, job: Job) -> None:
        """A worker that holds nothing takes the job now, when nothing waits before it (a lone
        task starts while its caller still sets up the wait). Otherwise it is queued, and the
        hand-over happens once this loop iteration's other work is done, so a burst of submits
        becomes one write per worker."""
        if self._closed:
            raise PoolUnavailable(f"pool {self.config.name!r} is closed")
        idle = None if self._queue or self._held else \
            next((w for w in self._workers.values() if w.state == "idle" and not w.jobs), None)
        if idle is None:
            self._queue.append(job)
        else:
            self._dispatch(idle, [job])
            if not self._queue:
                return
            # else the worker is dying and the job went back to the queue: the pump hands it on
        if not self._pump_scheduled:
            self._pump_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def take_queued(self, limit: int) -> list[Job]:
        """Queued jobs first; then jobs held by a worker behind its running one, which it is told
        to drop (if one started before the word arrived, that worker is stopped: it runs elsewhere)."""
        taken = JobQueue.take_queued(self, limit)
        for worker in self._workers.values():
            for job in reversed(worker.jobs):
                if len(taken) >= limit:
                    return taken
                if job is not worker.running and job.task_id not in worker.recalled:
                    self._recall(worker, job, "gone")
                    taken.append(job)
        return taken

    def _pump(self) -> None:
        """Hand queued jobs to idle workers; grow the pool when jobs still wait."""
        if self._closed or self._held:
            return
        # Spread before deepening: each free worker gets its share of what waits, up to DEPTH. While
        # the pool may still grow, one job each: what waits stays queued, so new workers are started.
        depth = DEPTH if len(self._workers) >= self.config.max_workers else 1
        ready = [w for w in self._workers.values() if w.state in ("idle", "busy") and len(w.jobs) < depth]
        if self._queue and ready:
            share = max(1, -(-len(self._queue) // len(ready)))
            for worker in sorted(ready, key=lambda w: len(w.jobs)):
                if not self._queue:
                    break
                self._dispatch(worker, [self._queue.popleft()
                                        for _ in range(min(share, depth - len(worker.jobs), len(self._queue)))])
        if not self._queue:
            self._rebalance_held()
        if self._queue:
            starting = sum(1 for w in self._workers.values() if w.state == "starting")
            room = self.config.max_workers - len(self._workers)
            want = min(room, len(self._queue) - starting)
            if want > 0 and self._spawn_backoff <= time.monotonic():
                self.sink.pool_event(self.pool_id, "pool_scaled",
                                     {"direction": "up", "trigger": "queue", "from": len(self._workers),
                                      "to": len(self._workers) + want})
                for _ in range(want):
                    self._spawn()

    def _rebalance_held(self) -> None:
        """Nothing queued: a worker with nothing to do takes back a job that waits, not started,
        behind another worker's running one (a long task must not hold a short one hostage)."""
        idle = sum(1 for w in self._workers.values() if w.state == "idle")
        if not idle:
            return
        for worker in self._workers.values():
            if idle <= 0:
                break
            for job in list(worker.jobs)[1:]:
                if job.task_id not in worker.recalled and job is not worker.running:
                    self._recall(worker, job, "take")
                    idle -= 1
                    break

    def _dispatch(self, worker: _Worker, jobs: list[Job]) -> None:
        """Hand jobs to a worker in one write. A worker that holds nothing starts the first at once:
        it is counted as started now and the worker does not announce it (one message less for
        a lone task)."""
        lone = not worker.jobs
        room = HOLD_BYTES - sum(j.wire_size for j in worker.jobs)
        sent: list[Job] = []
        frames: list[bytes] = []
        for i, job in enumerate(jobs):
            announce = not (lone and not sent)
            try:
                data = frame(pickle.dumps((JOB, job.task_id, job.type_ref, job.payload, self._context_blob,
                                           announce), protocol=pickle.HIGHEST_PROTOCOL))
            except Exception as exc:
                self.sink.task_finished(job.task_id, TaskState.FAILED, None, f"payload cannot be sent: {exc}",
                                        None)
                continue
            if len(data) > room and (sent or worker.jobs):  # over budget: the rest waits in the queue
                self._queue.extendleft(reversed(jobs[i:]))
                break
            job.wire_size = len(data)
            room -= len(data)
            frames.append(data)
            sent.append(job)
        if not sent:
            return
        try:
            worker.conn.sock.sendall(b"".join(frames))
        except OSError:
            self._queue.extendleft(reversed(sent))  # the worker is dying; its exit replaces it
            return
        worker.state = "busy"
        worker.jobs.extend(sent)
        if lone:
            self._started(worker, sent[0].task_id)

    def _started(self, worker: _Worker, task_id: str) -> None:
        """The worker began a job: the next one it holds, in order."""
        job = worker.jobs[0] if worker.jobs else None
        if job is None or job.task_id != task_id or job is worker.running:  # pragma: no cover - in step
            return
        worker.running = job
        job.attempts += 1
        if worker.recalled.pop(task_id, None) == "gone":  # it started before the recall reached it:
            self._end_running(worker, None, "")  # stop it the only way left (it is reported cancelled)
            return
        self.sink.task_started(task_id, worker.worker_id, job.attempts)
        if self._workers.get(worker.worker_id) is worker:
            assert self._loop is not None
            worker.deadline = self._loop.time() + job.timeout
            if worker.timer is None or worker.timer.when() > worker.deadline:
                self._arm(worker)

    def _arm(self, worker: _Worker) -> None:
        assert self._loop is not None
        if worker.timer is not None:
            worker.timer.cancel()
        worker.timer = self._loop.call_at(worker.deadline, self._on_timer, worker)

    def _on_timer(self, worker: _Worker) -> None:
        """The running job's deadline, or an earlier job's: time it out, or wait for its own."""
        assert self._loop is not None
        worker.timer = None
        job = worker.running
        if job is None or self._workers.get(worker.worker_id) is not worker:
            return
        if self._loop.time() < worker.deadline:
            self._arm(worker)
            return
        self._end_running(worker, TaskState.TIMED_OUT,
                          f"timed out after {job.timeout:g}s; its worker was killed and replaced")

    def _end_running(self, worker: _Worker, state: TaskState | None, error: str) -> None:
        """End the running job with `state` (None: it was ended already) by killing the worker;
        the jobs it held behind it are settled once it is gone (see _settle)."""
        job, worker.running = worker.running, None
        if job is not None:
            worker.jobs.remove(job)
            if state is not None:
                self.sink.task_finished(job.task_id, state, None, error, worker.worker_id)
        self._retire(worker, graceful=False)
        self._replace_if_needed()

    # -- workers -------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        worker_id = f"worker_{next(self._ids)}"
        env = dict(os.environ)
        # Workers import this package; make sure they find it even when not installed.
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Inherited by everything a task starts: who owns these processes (for operators and tests).
        env[OWNER_ENV] = str(os.getpid())
        proc = subprocess.Popen(
            [sys.executable, "-m", "pools.backends.worker_process", str(child_sock.fileno()), str(os.getpid())],
            pass_fds=(child_sock.fileno(),), start_new_session=True, env=env,
            stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
        )
        child_sock.close()
        conn = Channel(parent_sock)
        worker = _Worker(worker_id, proc, conn)
        self._workers[worker_id] = worker
        assert self._loop is not None
        self._loop.add_reader(conn.fileno(), self._on_readable, worker)
        self._watch_exit(worker)
        return worker

    def _watch_exit(self, worker: _Worker) -> None:
        """Reap the process the moment it exits (a pidfd becomes readable; elsewhere a thread
        waits), then report it."""
        loop = self._loop
        assert loop is not None
        try:
            fd = os.pidfd_open(worker.proc.pid)
        except (AttributeError, OSError):
            loop.run_in_executor(None, worker.proc.wait).add_done_callback(lambda _: self._exited(worker))
            return

        def ready() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            worker.proc.poll()
            self._exited(worker)

        loop.add_reader(fd, ready)

    def _exited(self, worker: _Worker) -> None:
        """The process is gone (reaped). Read what it said before it went, then settle the jobs
        it held: the one it ran failed (or retries), the others go back to the queue."""
        if not worker.gone.done():
            worker.gone.set_result(worker.proc.returncode)
        died = self._workers.get(worker.worker_id) is worker  # not asked to stop
        if died:
            self._detach(worker)
        self._read_all(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        how = describe_exit(worker.proc.returncode)
        pid = worker.pid or worker.proc.pid
        if died:
            if not worker.started.done():
                worker.started.set_exception(PoolUnavailable(f"worker exited during start-up ({how})"))
                worker.started.exception()  # mark retrieved; start() reports it
            self._crashes.append((time.monotonic(), f"{worker.worker_id} (pid {pid}) {how}"))
            self.sink.pool_event(self.pool_id, "worker_died", {"worker_id": worker.worker_id, "pid": pid,
                                                               "how": how})
            self._spawn_backoff = time.monotonic() + min(5.0, 0.1 * 2 ** min(len(self._crashes), 6))
        job, worker.running = worker.running, None
        if job is not None:
            worker.jobs.remove(job)
            verb = "died" if died else "was stopped"
            reason = f"worker process {pid} {verb} while running the task ({how})"
            if job.attempts <= job.retries and not self._closed:
                self._queue.appendleft(job)
                self.sink.task_requeued(job.task_id, reason + "; retrying")
            else:
                self.sink.task_finished(job.task_id, TaskState.FAILED, None, reason, worker.worker_id,
                                        pool_fault=True)
        for held in reversed(worker.jobs):  # handed over, never started: first in line again
            if worker.recalled.get(held.task_id) != "gone" and not self._closed:
                self._queue.appendleft(held)
        worker.jobs.clear()
        if died:
            self._replace_if_needed()
        else:
            self._pump()

    def _read_all(self, worker: _Worker) -> None:
        """Handle every message the worker has already sent."""
        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError):  # gone: the rest is in messages
            worker.conn.pull(block=False)
        while worker.conn.messages:
            self._handle(worker, worker.conn.messages.popleft())

    def _on_readable(self, worker: _Worker) -> None:
        try:
            worker.conn.pull(block=False)
        except (EOFError, OSError, pickle.UnpicklingError):
            # The worker is going: stop reading; its exit (reaped above) settles its jobs.
            assert self._loop is not None
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.conn.fileno())
            if worker.state != "stopping":
                worker.state = "exiting"
        while worker.conn.messages:
            self._handle(worker, worker.conn.messages.popleft())
        if self._workers.get(worker.worker_id) is worker:
            self._pump()

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == DONE:
            _, task_id, ok, result, error, next_id = message
            job = worker.running
            if job is not None and job.task_id == task_id:
                worker.jobs.remove(job)
                worker.running = None
                worker.tasks_done += 1
                self.sink.task_finished(task_id, TaskState.COMPLETED if ok else TaskState.FAILED, result, error,
                                        worker.worker_id)
            # else: a job already ended by timeout or cancel
            if next_id is not None:
                self._started(worker, next_id)
        elif kind == STARTED:
            self._started(worker, message[1])
        elif kind == SKIPPED:
            job = next((j for j in worker.jobs if j.task_id == message[1]), None)
            if job is not None:
                worker.jobs.remove(job)
                if worker.recalled.pop(job.task_id, None) == "take":
                    self._queue.appendleft(job)
        elif kind == READY:
            worker.pid = message[1]
            worker.state = "idle"
            worker.idle_since = time.monotonic()
            with contextlib.suppress(psutil.Error):
                worker.ps = psutil.Process(worker.pid)
                worker.ps.cpu_percent(None)
            if not worker.started.done():
                worker.started.set_result(None)
            self._spawn_backoff = 0.0
        if worker.state == "busy" and not worker.jobs:
            worker.state = "idle"
            worker.idle_since = time.monotonic()

    def _replace_if_needed(self) -> None:
        if self._closed:
            return
        missing = self._target - len(self._workers)
        delay = max(0.0, self._spawn_backoff - time.monotonic())
        if missing > 0 or self._queue:
            assert self._loop is not None
            if delay:
                self._loop.call_later(delay, self._refill)
            else:
                self._refill()

    def _refill(self) -> None:
        if self._closed:
            return
        for _ in range(self._target - len(self._workers)):
            self._spawn()
        self._pump()

    def _detach(self, worker: _Worker) -> None:
        self._workers.pop(worker.worker_id, None)
        if worker.timer:
            worker.timer.cancel()
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(worker.conn.fileno())

    def _retire(self, worker: _Worker, *, graceful: bool) -> None:
        """Stop a worker: a STOP message for an idle one, a kill for a busy one. Its socket stays
        open until it is gone, so what it said last is still read (see _exited)."""
        worker.state = "stopping"
        self._detach(worker)
        if graceful:
            with contextlib.suppress(OSError):
                worker.conn.send((STOP,))
        else:
            worker.kill()

    # -- scaling -------------------------------------------------------------------------
    async def scale(self, target: int, trigger: str = "manual") -> int:
        target = max(self.config.min_workers, min(self.config.max_workers, target))
        before = len(self._workers)
        self._target = target
        if target > before:
            new = [self._spawn() for _ in range(target - before)]
            await asyncio.wait([w.started for w in new], timeout=SPAWN_READY_TIMEOUT)
        elif target < before:
            idle = sorted((w for w in self._workers.values() if w.state in ("idle", "starting")),
                          key=lambda w: w.state != "starting")
            for worker in idle[: before - target]:
                self._retire(worker, graceful=True)
        if target != before:
            self.sink.pool_event(self.pool_id, "pool_scaled", {"direction": "up" if target > before else "down",
                                                               "trigger": trigger, "from": before, "to": target})
        return target

    def _schedule_reaper(self) -> None:
        assert self._loop is not None
        self._reaper = self._loop.call_later(max(0.05, self._idle_timeout / 4), self._reap_idle)

    def _reap_idle(self) -> None:
        """Stop workers idle longer than idle_timeout, down to the target (min_workers)."""
        if self._closed:
            return
        now = time.monotonic()
        excess = len(self._workers) - max(self._target, self.config.min_workers)
        if excess > 0 and not self._queue:
            idle = [w for w in self._workers.values()
                    if w.state == "idle" and now - w.idle_since >= self._idle_timeout]
            victims = idle[:excess]
            if victims:
                self.sink.pool_event(self.pool_id, "pool_scaled",
                                     {"direction": "down", "trigger": "idle", "from": len(self._workers),
                                      "to": len(self._workers) - len(victims)})
                for worker in victims:
                    self._retire(worker, graceful=True)
        self._schedule_reaper()

    # -- reporting -----------------------------------------------------------------------
    def _last_crash(self) -> str | None:
        return self._crashes[-1][1] if self._crashes else None

    def snapshot(self) -> BackendSnapshot:
        workers = []
        for w in self._workers.values():
            mem, cpu = w.measure()
            state = "stopping" if w.state == "exiting" else w.state
            workers.append(WorkerInfo(worker_id=w.worker_id, pid=w.pid or w.proc.pid, state=state,
                                      task_id=w.running.task_id if w.running else None, tasks_done=w.tasks_done,
                                      memory_mb=mem, cpu_percent=cpu))
        # A job handed to a worker but not started is still waiting: it counts as queued.
        in_flight = sum(1 for w in self._workers.values() if w.running is not None)
        held = sum(len(w.jobs) for w in self._workers.values()) - in_flight
        status, reason = self.status()
        return BackendSnapshot(status=status, status_reason=reason, workers=workers,
                               queue_size=len(self._queue) + held, in_flight=in_flight)

    def status(self) -> tuple[PoolStatus, str | None]:
        if self._closed:
            return PoolStatus.STOPPED, "closed"
        now = time.monotonic()
        while self._crashes and now - self._crashes[0][0] > self._crash_window:
            self._crashes.popleft()
        if len(self._crashes) >= self._crash_threshold:
            return PoolStatus.DEGRADED, (f"{len(self._crashes)} worker(s) died in the last "
                                         f"{self._crash_window:g}s; last: {self._crashes[-1][1]}")
        if any(w.state == "starting" for w in self._workers.values()):
            ready = any(w.state in ("idle", "busy") for w in self._workers.values())
            return (PoolStatus.SCALING if ready else PoolStatus.INITIALIZING), None
        return PoolStatus.RUNNING, None


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
