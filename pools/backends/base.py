"""The interface every pool type implements, and the sink it reports to.

A backend owns where tasks run (local worker processes, a remote peer, Kubernetes
Jobs). The PoolManager owns everything else: validation, ids, the store, waiting.
Backends are siblings behind this one small interface; each converts the errors of
what it drives (subprocesses, MCP clients, the Kubernetes API) at its own edge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from pools.errors import PoolUnavailable
from pools.models import PoolConfig, PoolStatus, TaskState, WorkerInfo


@dataclass(slots=True)
class Job:
    """One task as a backend sees it."""

    task_id: str
    task_type: str
    type_ref: str  # "module:Class", importable where the task runs
    payload: dict[str, Any]
    timeout: float
    retries: int = 0
    attempts: int = 0
    trace: dict[str, str] = field(default_factory=dict)  # W3C trace carrier, continued where it runs
    group: str | None = None  # the shards of one distribution share it (a Kubernetes pool: one Indexed Job)
    wire_size: int = 0  # bytes of its hand-over message (a local pool's budget of what a worker holds)


@dataclass(slots=True)
class BackendSnapshot:
    status: PoolStatus
    status_reason: str | None
    workers: list[WorkerInfo] = field(default_factory=list)
    queue_size: int = 0
    in_flight: int = 0

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.state == "busy")


class TaskSink(Protocol):
    """How a backend reports progress. Called on the event-loop thread."""

    def task_started(self, task_id: str, worker_id: str, attempts: int) -> None: ...

    def task_requeued(self, task_id: str, reason: str) -> None: ...

    def task_finished(self, task_id: str, state: TaskState, result: Any, error: str | None,
                      worker_id: str | None, *, pool_fault: bool = False) -> None:
        """`pool_fault`: the pool failed the task (worker died, pool closed, peer gone), not the
        task's own code; distribution retries such a shard on another pool."""

    def pool_event(self, pool_id: str, kind: str, data: dict[str, Any]) -> None: ...


class JobQueue:
    """The waiting-room every backend keeps: jobs not yet handed to a worker, pod or peer."""

    sink: TaskSink
    config: PoolConfig
    _closed: bool

    def __init__(self) -> None:
        self._queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        if self._closed:
            raise PoolUnavailable(f"pool {self.config.name!r} is closed")
        self._queue.append(job)
        self._pump()

    def _pump(self) -> None:
        """Hand queued jobs on to where they run, as capacity allows."""
        raise NotImplementedError

    def take_queued(self, limit: int) -> list[Job]:
        """Remove up to `limit` jobs that have not started, newest first, for another pool to run."""
        taken: list[Job] = []
        while self._queue and len(taken) < limit:
            taken.append(self._queue.pop())
        return taken

    def _cancel_queued(self, task_id: str) -> bool:
        for job in self._queue:
            if job.task_id == task_id:
                self._queue.remove(job)
                self.sink.task_finished(task_id, TaskState.CANCELLED, None, "cancelled while queued", None)
                return True
        return False

    def _drain_queue(self, abandon: bool) -> None:
        """On close: queued jobs end cancelled (a pool fault: distribution retries them elsewhere),
        unless the owner is shutting down and leaves them for the next owner to reconcile."""
        while self._queue:
            job = self._queue.popleft()
            if not abandon:
                self.sink.task_finished(job.task_id, TaskState.CANCELLED, None, "the pool was closed before it ran",
                                        None, pool_fault=True)


class PoolBackend(ABC):
    def __init__(self, pool_id: str, config: PoolConfig, sink: TaskSink) -> None:
        self.pool_id = pool_id
        self.config = config
        self.sink = sink

    async def verify(self) -> None:  # noqa: B027 - optional hook; local pools need no check
        """A strict check before a new pool is registered (e.g. the peer answers); raise
        PoolUnavailable naming what is wrong. start() afterwards may be lenient."""

    @abstractmethod
    async def start(self) -> None:
        """Bring the pool up; raise PoolUnavailable with the reason when it cannot start."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Queue a job. Never blocks; the outcome arrives through the sink."""

    @abstractmethod
    def cancel(self, task_id: str) -> bool:
        """Stop a queued or running job; True when this backend had it."""

    @abstractmethod
    def take_queued(self, limit: int) -> list[Job]:
        """Remove up to `limit` jobs that have not started, newest first, for another pool to run."""

    def hold(self) -> None:  # noqa: B027 - optional hook; a backend without a queue of its own has none
        """Start nothing new: the owner is stopping. Queued jobs stay queued (the next owner
        re-queues them); running ones go on."""

    def accepts(self, task_type: str) -> str | None:
        """None when this pool can run `task_type`, else why not."""
        return None

    def resumable(self, task_id: str) -> bool:
        """True when a task the previous owner left running is still running here (a Kubernetes
        Job): submitting it again follows it to its end instead of running it a second time."""
        return False

    @abstractmethod
    async def scale(self, target: int, trigger: str = "manual") -> int:
        """Move toward `target` workers within min..max; returns the new target."""

    @abstractmethod
    def snapshot(self) -> BackendSnapshot: ...

    def status(self) -> tuple[PoolStatus, str | None]:
        """The pool's status and why (what snapshot() says, without its per-worker detail)."""
        snap = self.snapshot()
        return snap.status, snap.status_reason

    @abstractmethod
    async def close(self, *, abandon: bool = False) -> None:
        """Stop all workers. Unfinished jobs end (cancelled) through the sink, unless `abandon`:
        then the owner is shutting down and leaves them for the next owner to reconcile."""
