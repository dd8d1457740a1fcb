"""The `session-buddy` pool type: a remote MCP peer that runs tasks on its own 3 workers.

    submit(job) ─> queue ─> _pump (≤ 3 in flight) ─> execute_on_pool(pool_id, prompt, context)
                                                       │ over streamable HTTP, one session a call
    monitor (every peer_health_interval_s) ─> get_pool_status ─> workers, health
        1-2 failed probes: degraded · 3+: failed · a success: running again (pool re-created
        if the peer restarted without it)

Works against our peer (structured JSON) and a real Session-Buddy (text). A peer that is
unreachable fails its running tasks as pool faults, which distribution retries elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.propagate import extract

from pools.backends.base import BackendSnapshot, Job, JobQueue, PoolBackend, TaskSink
from pools.errors import InvalidInput, PoolUnavailable
from pools.models import PoolConfig, PoolStatus, TaskState, WorkerInfo
from pools.peer_client import PeerClient, PeerReply

PEER_WORKERS = 3
REQUIRED_TOOLS = ("create_pool", "execute_on_pool", "get_pool_status")
FAILED_AFTER = 3  # consecutive failed probes before degraded becomes failed
TERMINAL = {s.value for s in TaskState if s.terminal}


def _number(value: Any) -> float | None:
    """A figure a peer reports, or None when it reports none (a text-only Session-Buddy)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class SessionBuddyBackend(JobQueue, PoolBackend):
    def __init__(self, pool_id: str, config: PoolConfig, sink: TaskSink, *, token: str | None = None,
                 health_interval: float = 2.0, slots: int = PEER_WORKERS) -> None:
        PoolBackend.__init__(self, pool_id, config, sink)
        JobQueue.__init__(self)
        self.slots = slots  # tasks in flight at once: 3 per peer (more behind a Service of several)
        assert config.endpoint
        self.client = PeerClient(config.endpoint, token)
        self._interval = health_interval
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._workers: list[WorkerInfo] = []
        self._failures = 0
        self._last_error: str | None = None
        self._closed = False
        self._monitor: asyncio.Task[None] | None = None
        self._structured = True  # False against a text-only (real) Session-Buddy

    # -- lifecycle ------------------------------------------------------------------------
    async def verify(self) -> None:
        """Strict check at registration: reachable, and speaks the pool tools."""
        tools = await self.client.tool_names()
        missing = [t for t in REQUIRED_TOOLS if t not in tools]
        if missing:
            raise PoolUnavailable(
                f"the peer at {self.config.endpoint} lacks the pool tools {', '.join(missing)} "
                f"(it has {len(tools)} tools); run `mahavishnu peer serve` there, or a Session-Buddy with pool "
                "tools enabled", field="endpoint")
        await self._ensure_pool()

    async def start(self) -> None:
        """Lenient: a peer that is down now is probed until it answers."""
        with contextlib.suppress(PoolUnavailable):
            await self._probe()
        self._monitor = asyncio.create_task(self._watch())

    async def close(self, *, abandon: bool = False) -> None:
        self._closed = True
        if self._monitor:
            self._monitor.cancel()
        self._drain_queue(abandon)
        for task_id, (_, runner) in list(self._running.items()):
            runner.cancel()
            if not abandon:
                self.sink.task_finished(task_id, TaskState.CANCELLED, None, "the pool was closed while the task ran",
                                        None, pool_fault=True)
        self._running.clear()
        if not abandon:  # we created the peer's pool; leave nothing behind
            with contextlib.suppress(PoolUnavailable):
                await self.client.call("delete_pool", {"pool_id": self.pool_id}, timeout=10)

    # -- health ---------------------------------------------------------------------------
    async def _ensure_pool(self) -> None:
        reply = await self.client.call("create_pool", {"pool_id": self.pool_id}, timeout=30)
        if reply.is_error and "exist" not in reply.message.lower():
            raise PoolUnavailable(f"the peer at {self.config.endpoint} would not create the pool: {reply.message}")
        self._structured = reply.data is not None

    async def _probe(self) -> None:
        try:
            reply = await self.client.call("get_pool_status", {"pool_id": self.pool_id}, timeout=10)
            if reply.is_error:  # the peer restarted without our pool: make it again
                await self._ensure_pool()
                reply = await self.client.call("get_pool_status", {"pool_id": self.pool_id}, timeout=10)
        except PoolUnavailable as exc:
            self._failures += 1
            self._last_error = exc.message
            raise
        self._failures, self._last_error = 0, None
        self._workers = self._parse_workers(reply)

    def _parse_workers(self, reply: PeerReply) -> list[WorkerInfo]:
        listed = (reply.data or {}).get("workers") if not reply.is_error else None
        if isinstance(listed, list) and listed:
            return [WorkerInfo(worker_id=f"{self.config.name}/{w.get('worker_id', i)}", pid=w.get("pid"),
                               state=str(w.get("state", "idle")), tasks_done=int(w.get("tasks_done", 0)),
                               memory_mb=_number(w.get("memory_mb")), cpu_percent=_number(w.get("cpu_percent")))
                    for i, w in enumerate(listed) if isinstance(w, dict)]
        # A text-only peer does not list its workers; it always manages three.
        return [WorkerInfo(worker_id=f"{self.config.name}/worker_{i + 1}", state="idle") for i in range(PEER_WORKERS)]

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(PoolUnavailable):
                await self._probe()
                self._pump()

    # -- tasks ----------------------------------------------------------------------------
    def cancel(self, task_id: str) -> bool:
        if self._cancel_queued(task_id):
            return True
        entry = self._running.pop(task_id, None)
        if entry is None:
            return False
        # Cancelling the call closes its request: the peer stops the work on its side.
        entry[1].cancel()
        self.sink.task_finished(task_id, TaskState.CANCELLED, None, "cancelled while running on the peer", None)
        self._pump()
        return True

    def _pump(self) -> None:
        if self._closed or self._failures >= FAILED_AFTER:
            return
        while self._queue and len(self._running) < self.slots:
            job = self._queue.popleft()
            job.attempts += 1
            self._running[job.task_id] = (job, asyncio.create_task(self._run(job)))

    async def _run(self, job: Job) -> None:
        worker = f"{self.config.name}/peer"
        self.sink.task_started(job.task_id, worker, job.attempts)
        context = {"mahavishnu": {"task_type": job.task_type, "payload": job.payload, "task_id": job.task_id}}
        args = {"pool_id": self.pool_id, "prompt": f"{job.task_type} task {job.task_id}", "context": context,
                "timeout": job.timeout}
        started = time.monotonic()
        # Continue the task's trace: the SDK puts the current context into the call's _meta.
        token = otel_context.attach(extract(job.trace)) if job.trace else None
        try:
            reply = await asyncio.wait_for(self.client.call("execute_on_pool", args, timeout=job.timeout + 15),
                                           job.timeout + 10)
        except TimeoutError:
            self._finish(job, TaskState.TIMED_OUT, None, f"timed out after {job.timeout:g}s on the peer", worker)
            return
        except PoolUnavailable as exc:
            self._failures += 1
            self._last_error = exc.message
            self._finish(job, TaskState.FAILED, None, exc.message, worker, pool_fault=True)
            return
        finally:
            if token is not None:
                otel_context.detach(token)
        state, result, error = self._outcome(reply, time.monotonic() - started)
        remote_worker = (reply.data or {}).get("worker_id")
        if remote_worker:
            worker = f"{self.config.name}/{remote_worker}"
        self._finish(job, state, result, error, worker)

    def _outcome(self, reply: PeerReply, elapsed: float) -> tuple[TaskState, Any, str | None]:
        if reply.is_error:
            return TaskState.FAILED, None, f"the peer refused or failed the task: {reply.message}"
        data = reply.data
        if data is not None and data.get("status") in TERMINAL:
            state = TaskState(data["status"])
            return state, data.get("result"), data.get("error") if state is not TaskState.COMPLETED else None
        # A text-only Session-Buddy: its answer is the result.
        return TaskState.COMPLETED, {"output": reply.text, "elapsed_s": round(elapsed, 4)}, None

    def _finish(self, job: Job, state: TaskState, result: Any, error: str | None, worker: str,
                pool_fault: bool = False) -> None:
        if self._running.pop(job.task_id, None) is None:
            return  # already ended by cancel or close
        self.sink.task_finished(job.task_id, state, result, error, worker, pool_fault=pool_fault)
        self._pump()

    # -- scaling and reporting --------------------------------------------------------------
    async def scale(self, target: int, trigger: str = "manual") -> int:
        if target != PEER_WORKERS:
            raise InvalidInput(f"a session-buddy pool has a fixed {PEER_WORKERS} workers; to scale, register more "
                               "peers as pools", field="target")
        return PEER_WORKERS

    def snapshot(self) -> BackendSnapshot:
        busy = list(self._running)
        workers = [w.model_copy(update={"state": "busy" if i < len(busy) else w.state,
                                        "task_id": busy[i] if i < len(busy) else None})
                   for i, w in enumerate(self._workers or self._parse_workers(PeerReply(False, None, "")))]
        if self._closed:
            status, reason = PoolStatus.STOPPED, "closed"
        elif self._failures >= FAILED_AFTER:
            status, reason = PoolStatus.FAILED, f"peer unreachable ({self._failures} probes): {self._last_error}"
        elif self._failures:
            status, reason = PoolStatus.DEGRADED, f"peer not answering: {self._last_error}"
        elif not self._workers:
            status, reason = PoolStatus.INITIALIZING, "waiting for the peer's first answer"
        else:
            status, reason = PoolStatus.RUNNING, None
        return BackendSnapshot(status=status, status_reason=reason, workers=workers, queue_size=len(self._queue),
                               in_flight=len(self._running))
