"""PoolManager: the one entry point to pools and tasks.

    caller ──> PoolManager.submit ──> validate (pool, task type, payload) ──> store (queued)
                                  └─> backend.submit(Job) ─ ─ ─> sink callbacks (this class)
                                                                  ├─ task_started  -> store
                                                                  └─ task_finished -> store, waiters

It owns the state directory (one owner at a time), reconciles what a previous owner
left unfinished, and hides which pool type a pool is from everything above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pools import jsontext
from pools.backends.base import BackendSnapshot, Job, PoolBackend
from pools.backends.local import LocalBackend
from pools.credentials import Credentials, KubeAccess
from pools.egress import Egress
from pools.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    PoolError,
    PoolNotFound,
    PoolUnavailable,
    TaskNotFound,
)
from pools.file_roots import FileCaps, FileRoots
from pools.ids import looks_like_pool_id, looks_like_task_id, new_pool_id, new_task_id
from pools.lock import HomeLock
from pools.models import (
    DistributionResult,
    DistributionStrategy,
    HealthReport,
    Move,
    PoolConfig,
    PoolHealth,
    PoolInfo,
    PoolMetrics,
    PoolStatus,
    PoolType,
    RebalanceReport,
    RebalanceStrategy,
    Resize,
    RouteDecision,
    RoutingStrategy,
    StatsReport,
    TaskOptions,
    TaskRecord,
    TaskState,
    TypeStats,
)
from pools.routing import Candidate, Router, eligible
from pools.settings import Settings
from pools.store import Store
from pools.task_types import TaskTypeRegistry
from pools.telemetry import Telemetry

log = logging.getLogger("mahavishnu.pools")

EventListener = Callable[[dict[str, Any]], None]

# Finished records kept in memory, so that a wait or a status read right after the end (a client
# collecting results) needs no read back from the store; only small payloads and results (as JSON
# text), so it stays small.
RECENT_RECORDS = 1024
RECENT_RESULT_CHARS = 4096


def json_event_sink(where: str) -> EventListener:
    """The `event_log` setting: every stored event also as one JSON line, for an event collector."""
    import json
    import sys

    stream = sys.stderr if where == "stderr" else open(where, "a", buffering=1)  # noqa: SIM115 - lives with us

    def write(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event, default=str) + "\n")

    return write


@functools.cache
def _no_options() -> TaskOptions:
    return TaskOptions()  # read only: one instance serves every submit without options


def _now() -> datetime:
    return datetime.now(UTC)


def _expire(future: asyncio.Future[Any]) -> None:
    """A wait's timeout: its caller gets the task as it stands."""
    if not future.done():
        future.set_result(None)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass
class _Pool:
    pool_id: str
    config: PoolConfig
    created_at: datetime
    backend: PoolBackend | None = None
    failure: str | None = None  # why the backend could not start
    verified: PoolBackend | None = None  # checked at registration, started with the manager


class PoolManager:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.load()
        self.task_types = TaskTypeRegistry(self.settings.enabled_task_types, self.settings.task_type_refs)
        self.credentials = Credentials(self.settings.credentials)
        self.egress = Egress(self.settings.allowed_endpoints,
                             [*self.credentials.endpoint_prefixes(), self.settings.memory_endpoint,
                              *self.settings.memory_endpoints])
        self.client_roots: list[str] | None = None  # an MCP client's declared roots narrow file access
        self.task_types.file_roots = self.file_roots()
        self._lock = HomeLock(self.settings.home)
        self._store: Store | None = None
        self._pools: dict[str, _Pool] = {}
        self._live: dict[str, TaskRecord] = {}
        self._recent: dict[str, TaskRecord] = {}  # finished, oldest first (RECENT_RECORDS)
        self._large: set[str] = set()  # live tasks whose payload is too large to keep in _recent
        self._waiters: dict[str, list[asyncio.Future[TaskRecord | None]]] = {}
        self._quiet_waiters: dict[str, list[asyncio.Future[TaskRecord | None]]] = {}  # wait(durable=False)
        self._unsettled: dict[str, int] = {}  # task -> the store generation that commits its outcome
        self._maintenance: asyncio.TimerHandle | None = None
        self.listeners: list[EventListener] = []
        self.router = Router()
        self.telemetry = Telemetry()
        self.telemetry.attach(self)
        if self.settings.event_log:
            self.listeners.append(json_event_sink(self.settings.event_log))
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            raise PoolUnavailable("the pool manager is not started")
        return self._store

    async def start(self) -> None:
        await asyncio.to_thread(self._lock.acquire)
        loop = asyncio.get_running_loop()
        try:
            # Group commit: what is acknowledged waits for its batch's commit (see pools.store).
            self._store = Store(self.settings.db_path, loop)
            self._store.on_commit.append(self._forget_settled)
            self.store.prune(time.time() - self.settings.retention_days * 86400)
            for row in self.store.open_pools():
                config = PoolConfig.model_validate_json(row["config"])
                self._pools[row["pool_id"]] = _Pool(row["pool_id"], config, _dt(row["created_at"]) or _now())
                self._known(config.name)
            if self.settings.default_pool and self._never_had_pools():
                await self.register(PoolConfig(name="default", min_workers=1, max_workers=os.cpu_count() or 2))
            await asyncio.gather(*(self._start_backend(p, p.verified) for p in self._pools.values()
                                   if p.backend is None))
            self._reconcile()
            self.store.commit()
        except BaseException:
            await self.close()
            raise
        self.started = True
        self._maintenance = loop.call_later(3600, self._hourly)

    def hold(self) -> None:
        """The owner is stopping: start no queued task (each backend holds its queue)."""
        for pool in self._pools.values():
            if pool.backend is not None:
                pool.backend.hold()

    async def drain(self, grace: float) -> int:
        """Hold every queue and give running tasks up to `grace` seconds to finish; returns how
        many still run."""
        self.hold()
        running = [t for t, r in self._live.items() if r.state is TaskState.RUNNING]
        if running and grace > 0:
            await asyncio.wait([asyncio.ensure_future(self.wait(t)) for t in running], timeout=grace)
        return sum(1 for r in self._live.values() if r.state is TaskState.RUNNING)

    async def close(self, reason: str | None = None) -> None:
        """Stop every backend (workers end) and release the state directory. Pools stay
        registered; unfinished tasks are left to the next owner's reconciliation, and running
        ones keep `reason` (why their owner stopped) for it."""
        if self._maintenance:
            self._maintenance.cancel()
        if self._store is not None and reason:
            for task_id, record in self._live.items():
                if record.state is TaskState.RUNNING:
                    self._store.mark_abandoned(task_id, reason)
        for pool in self._pools.values():
            if pool.backend is not None:
                with contextlib.suppress(Exception):
                    await pool.backend.close(abandon=True)
                pool.backend = None
        for task_id, record in list(self._live.items()):
            # Left unfinished on purpose: the next owner reconciles them (re-queue or fail with reason).
            self._wake(task_id, record)
        if self._store is not None:
            self._store.close()
            self._store = None
        self._lock.release()
        self.started = False

    async def durable(self) -> None:
        """Return once everything recorded so far is committed; call before acknowledging it."""
        if self._store is not None:
            await self._store.durable()

    async def __aenter__(self) -> PoolManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _known(self, pool_name: str) -> None:
        """Metrics: every series this pool can produce exists at 0 from now on."""
        self.telemetry.pool_known(pool_name, self.task_types.enabled & set(self.task_types.refs))

    def _never_had_pools(self) -> bool:
        return self.store.pool_count() == 0

    def _hourly(self) -> None:
        if self._store is not None:
            self._recent.clear()  # nothing pruned may still be served from memory
            self.store.prune(time.time() - self.settings.retention_days * 86400)
            self._maintenance = asyncio.get_running_loop().call_later(3600, self._hourly)

    # -- the trust boundary: where the server may connect, with what, and what it may read ---
    async def peer_access(self, endpoint: str, credential: str | None = None, *,
                          field: str = "endpoint") -> str | None:
        """Check that the server may connect to `endpoint` (pools.egress) and return the bearer token
        to send there: the named credential when bound to it, else the one bound to it, else None."""
        await self.egress.check(endpoint, field=field)
        return await asyncio.to_thread(self.credentials.for_endpoint, endpoint, credential)

    async def kube_access(self, config: PoolConfig) -> KubeAccess:
        """How a Kubernetes pool reaches its cluster: an API URL the operator allows (with a credential
        bound to it), or a context of the operator's kubeconfig that the operator allows."""
        warm = config.labels.get("warm_endpoint")
        if warm:
            await self.egress.check(warm, field="labels.warm_endpoint")
        kubeconfig = str(self.settings.kubeconfig) if self.settings.kubeconfig else None
        if config.endpoint:
            token = await self.peer_access(config.endpoint, config.credential)
            ca_file = self.credentials.ca_for_endpoint(config.endpoint, config.credential)
            return KubeAccess(host=config.endpoint.rstrip("/"), token=token, ca_file=ca_file)
        token = None
        if config.kube_context is not None:
            if config.credential is not None:
                token = await asyncio.to_thread(self.credentials.for_context, config.kube_context, config.credential)
            elif config.kube_context not in self.settings.kube_contexts:
                allowed = ", ".join(self.settings.kube_contexts) or "none"
                raise InvalidInput(f"Kubernetes context {config.kube_context!r} is not one the operator allows "
                                   f"(kube_contexts: {allowed}); the operator lists contexts in kube_contexts in "
                                   "settings.yaml; `mahavishnu pools credentials` shows them", field="kube_context")
        elif config.credential is not None:
            raise InvalidInput("a credential for a Kubernetes pool needs endpoint (an API URL it is bound to) or "
                               "kube_context (a context it is bound to)", field="credential")
        return KubeAccess(kubeconfig=kubeconfig, context=config.kube_context, token=token)

    def file_roots(self) -> FileRoots:
        """Where tasks and tools may read files: the working directory plus file_roots, narrowed
        to the client's roots when an MCP client declared some."""
        s = self.settings
        roots = [os.path.realpath(os.getcwd()), *(os.path.realpath(p) for p in s.file_roots)]
        return FileRoots(roots, self.client_roots,
                         FileCaps(s.max_files_per_task, s.max_file_bytes, s.max_read_bytes_per_task))

    def set_client_roots(self, roots: list[str] | None) -> None:
        self.client_roots = [os.path.realpath(r) for r in roots] if roots is not None else None
        self.task_types.file_roots = self.file_roots()

    def _check_limits(self, config: PoolConfig) -> None:
        s = self.settings
        if len(self._pools) + 1 > s.max_pools:
            raise LimitExceeded(f"this server has {len(self._pools)} pools, its limit (setting max_pools = "
                                f"{s.max_pools}); close one or ask the operator to raise max_pools", field="name")
        if config.max_workers > s.max_workers_per_pool:
            raise LimitExceeded(f"max_workers {config.max_workers} is over the limit of {s.max_workers_per_pool} "
                                "workers per pool (setting max_workers_per_pool)", field="max_workers")
        if config.type is PoolType.MAHAVISHNU:
            used = sum(p.config.max_workers for p in self._pools.values() if p.config.type is PoolType.MAHAVISHNU)
            if used + config.max_workers > s.max_total_workers:
                raise LimitExceeded(f"local pools may have {s.max_total_workers} workers in all (setting "
                                    f"max_total_workers); {used} are taken, so max_workers may be at most "
                                    f"{max(0, s.max_total_workers - used)}", field="max_workers")

    async def check_file_inputs(self, task_type: Any, payload: dict[str, Any]) -> None:
        """The payload's paths (TaskType.file_inputs) against the file roots, in a thread."""
        inputs = task_type.file_inputs(payload)
        if inputs:
            await asyncio.to_thread(self._check_file_inputs, inputs)

    def _check_file_inputs(self, inputs: list[tuple[str, str]]) -> None:
        """Blocking (stat): every path inside the file roots (the client's too) and a regular file or
        directory. A missing one is left to the task, which fails saying so."""
        from pools.file_roots import OutsideRoots

        roots = self.file_roots()
        for field, path in inputs:
            try:
                roots.resolve(path, what=field)
            except OutsideRoots as exc:
                raise InvalidInput(str(exc), field=field) from None
            except FileNotFoundError:
                continue

    def _check_task_limits(self, payload: dict[str, Any]) -> str:
        """Refuse a task over the limits; returns the payload's JSON text, as the store keeps it."""
        s = self.settings
        if len(self._live) >= s.max_queued_tasks:
            raise LimitExceeded(f"{len(self._live)} tasks are queued or running, the limit (setting "
                                f"max_queued_tasks = {s.max_queued_tasks}); wait for some to finish",
                                field="task_type")
        text = jsontext.dumps(payload)
        size = len(text.encode())
        if size > s.max_payload_bytes:
            raise LimitExceeded(f"the payload is {size} bytes as JSON, over the limit of {s.max_payload_bytes} "
                                "(setting max_payload_bytes); send less, or put it in a file inside the file "
                                "roots and pass its path", field="payload")
        return text

    def _run_context(self, pool: _Pool) -> dict[str, Any]:
        """What a task learns about where it runs (pools.task_types.RunContext)."""
        return {"worker_type": pool.config.worker_type, "prompt_commands": self.settings.prompt_commands,
                "file_roots": self.file_roots().to_context(), "max_result_bytes": self.settings.max_result_bytes,
                "worker_memory_bytes": self.settings.worker_memory_bytes}

    async def _new_backend(self, pool: _Pool) -> PoolBackend:
        """A backend for `pool`, after checking where it connects and with which credential."""
        c = pool.config
        if c.type is PoolType.SESSION_BUDDY:
            assert c.endpoint is not None
            return self._make_backend(pool, token=await self.peer_access(c.endpoint, c.credential))
        if c.type is PoolType.KUBERNETES:
            return self._make_backend(pool, access=await self.kube_access(c))
        if c.credential is not None:
            raise InvalidInput("a local (mahavishnu) pool takes no credential", field="credential")
        return self._make_backend(pool)

    def _make_backend(self, pool: _Pool, *, token: str | None = None,
                      access: KubeAccess | None = None) -> PoolBackend:
        if pool.config.type is PoolType.MAHAVISHNU:
            return LocalBackend(
                pool.pool_id, pool.config, self, context=self._run_context(pool),
                idle_timeout=self.settings.idle_timeout_s, crash_window=self.settings.crash_window_s,
                crash_threshold=self.settings.crash_threshold,
            )
        if pool.config.type is PoolType.SESSION_BUDDY:
            from pools.backends.session_buddy import SessionBuddyBackend

            assert pool.config.endpoint is not None
            return SessionBuddyBackend(pool.pool_id, pool.config, self, token=token,
                                       health_interval=self.settings.peer_health_interval_s)
        from pools.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(pool.pool_id, pool.config, self, context=self._run_context(pool), access=access,
                                 poll_interval=self.settings.k8s_poll_interval_s,
                                 pending_timeout=self.settings.k8s_pending_timeout_s,
                                 ttl_after_finished=self.settings.k8s_job_ttl_s,
                                 degraded_after=self.settings.k8s_degraded_after_s,
                                 failed_after=self.settings.k8s_failed_after_s,
                                 enabled_task_types=list(self.settings.enabled_task_types))

    async def _start_backend(self, pool: _Pool, backend: PoolBackend | None = None) -> None:
        pool.verified = None
        try:
            # A restored pool is checked again: the operator may have withdrawn its endpoint or credential.
            backend = backend or await self._new_backend(pool)
            await backend.start()
        except PoolError as exc:
            pool.failure = exc.message
            self.store.set_pool_status(pool.pool_id, PoolStatus.FAILED.value, exc.message)
            self._event("pool_failed", pool.pool_id, data={"reason": exc.message})
            if backend is not None:
                with contextlib.suppress(Exception):
                    await backend.close()
            return
        pool.backend, pool.failure = backend, None
        self.store.set_pool_status(pool.pool_id, PoolStatus.RUNNING.value, None)

    def _reconcile(self) -> None:
        """Finish or re-queue what a previous owner left queued or running."""
        for row in self.store.unfinished_tasks():
            record = self._record_from_row(row)
            was_running = record.state is TaskState.RUNNING
            exited = record.error or "the process running it exited before it finished"
            why = self._why_not_requeue(record)
            pool = self._pools.get(record.pool_id)
            if why is None and pool is not None and pool.backend is not None:
                job = Job(record.task_id, record.task_type, self.task_types.refs[record.task_type], record.payload,
                          record.timeout, record.retries, record.attempts)
                try:
                    pool.backend.submit(job)
                except PoolError as exc:
                    why = f"its pool would not take it back: {exc.message}"
                else:
                    record.state, record.error = TaskState.QUEUED, None
                    self._live[record.task_id] = record
                    if len(row["payload"]) > RECENT_RESULT_CHARS:
                        self._large.add(record.task_id)
                    self.store.mark_queued(record.task_id, record.pool_id)
                    self._event("task_reconciled", record.pool_id, record.task_id, {
                        "outcome": "requeued",
                        "reason": f"re-queued: {exited}" if was_running else "re-queued after a restart"})
                    continue
            prefix = f"{exited}; " if was_running else ""
            record.state, record.finished_at = TaskState.FAILED, _now()
            record.error = prefix + (why or "its pool is gone")
            self.store.mark_finished(record)
            self._event("task_reconciled", record.pool_id, record.task_id, {"outcome": "failed",
                                                                              "reason": record.error})

    def _why_not_requeue(self, record: TaskRecord) -> str | None:
        """None when a task the previous owner left may run again here, else why not."""
        try:
            task_type = self.task_types.get(record.task_type)
        except PoolError as exc:
            return exc.message
        pool = self._pools.get(record.pool_id)
        if pool is None or pool.backend is None:
            return f"its pool {record.pool_id} is closed or failed to start"
        if record.state is TaskState.RUNNING and not task_type.idempotent and \
                not pool.backend.resumable(record.task_id):
            return (f"it was running under the previous owner of {self.settings.home}; task type "
                    f"{record.task_type!r} is not idempotent, so it was not re-run")
        return None

    # -- events ---------------------------------------------------------------------------
    def _event(self, kind: str, pool_id: str | None = None, task_id: str | None = None,
               data: dict[str, Any] | None = None) -> None:
        self.store.add_event(kind, pool_id, task_id, data)
        if self.listeners:
            event = {"ts": time.time(), "kind": kind, "pool_id": pool_id, "task_id": task_id, **(data or {})}
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # a broken listener must not break the pool
                    log.exception("event listener failed")

    async def record_event(self, kind: str, pool_id: str | None = None, task_id: str | None = None,
                           data: dict[str, Any] | None = None) -> None:
        """An application's own event (mahavishnu.integrations.EventCollector), logged and committed
        like the pools' events."""
        self._event(kind, pool_id, task_id, data)
        await self.store.durable()

    # -- pools ----------------------------------------------------------------------------
    def resolve(self, ref: str) -> _Pool:
        """A pool by id or by name."""
        if ref in self._pools:
            return self._pools[ref]
        for pool in self._pools.values():
            if pool.config.name == ref:
                return pool
        if ref.startswith("pool_") and len(ref) >= 9:  # a prefix, as narrow tables show ids (names never
            found = [p for pid, p in self._pools.items() if pid.startswith(ref)]  # start with pool_)
            if len(found) == 1:
                return found[0]
            if found:
                raise InvalidInput(f"{ref!r} is the start of more than one pool id; give more of it", field="pool")
        kind = "id" if looks_like_pool_id(ref) else "name"
        raise PoolNotFound(f"no pool with {kind} {ref!r}; `mahavishnu pools list` shows the pools", field="pool")

    async def register(self, config: PoolConfig) -> PoolInfo:
        if any(p.config.name == config.name for p in self._pools.values()):
            raise Conflict(f"a pool named {config.name!r} already exists; choose another name or close it first",
                           field="name")
        if config.type is PoolType.SESSION_BUDDY:  # a peer always manages three workers
            config = config.model_copy(update={"min_workers": 3, "max_workers": 3})
        self._check_limits(config)
        pool = _Pool(new_pool_id(), config, _now())
        backend = await self._new_backend(pool)
        await backend.verify()  # fails early: unknown type, unreachable peer, missing tools, no cluster
        try:
            self.store.insert_pool(pool.pool_id, config.name, config.model_dump(mode="json"),
                                   PoolStatus.INITIALIZING.value, pool.created_at.timestamp())
            self._pools[pool.pool_id] = pool
            self._known(config.name)
            self._event("pool_registered", pool.pool_id, data={"name": config.name,
                                                              "pool_type": config.type.value})
            if self.started:
                await self._start_backend(pool, backend)
            else:  # start() brings it up: the backend already verified, not a second one
                pool.verified = backend
            self.store.commit()
        except BaseException:
            # Half-registered: verify() may have made the pool on a peer; leave nothing behind there or here.
            self._pools.pop(pool.pool_id, None)
            with contextlib.suppress(Exception):
                self.store.close_pool(pool.pool_id, "registration failed")
                self.store.commit()
            with contextlib.suppress(Exception):
                await backend.close()
            raise
        return self.pool_info(pool)

    def pool_info(self, pool: _Pool, details: bool = False) -> PoolInfo:
        snap = pool.backend.snapshot() if pool.backend else None
        row = self.store.pool_row(pool.pool_id)
        metrics = PoolMetrics()
        if row is not None:
            metrics = PoolMetrics(
                tasks_completed=row["completed"], tasks_failed=row["failed"], tasks_cancelled=row["cancelled"],
                tasks_timed_out=row["timed_out"],
                avg_duration_s=round(row["duration_sum"] / row["duration_n"], 4) if row["duration_n"] else None)
        if snap is not None:
            mems = [w.memory_mb for w in snap.workers if w.memory_mb is not None]
            cpus = [w.cpu_percent for w in snap.workers if w.cpu_percent is not None]
            metrics.memory_mb = round(sum(mems), 1) if mems else None
            metrics.cpu_percent = round(sum(cpus), 1) if cpus else None
            metrics.queue_size, metrics.in_flight = snap.queue_size, snap.in_flight
        status, reason = self._status(pool, snap)
        c = pool.config
        return PoolInfo(
            pool_id=pool.pool_id, name=c.name, pool_type=c.type, status=status, status_reason=reason,
            workers=len(snap.workers) if snap else 0, min_workers=c.min_workers, max_workers=c.max_workers,
            worker_type=c.worker_type, region=c.region, endpoint=c.endpoint, credential=c.credential,
            namespace=c.namespace,
            container_image=c.container_image, labels=c.labels, created_at=pool.created_at, metrics=metrics,
            worker_details=snap.workers if (snap and details) else [],
        )

    def _status(self, pool: _Pool, snap: BackendSnapshot | None) -> tuple[PoolStatus, str | None]:
        if snap is not None:
            return snap.status, snap.status_reason
        if pool.failure:
            return PoolStatus.FAILED, pool.failure
        return PoolStatus.PENDING, "not started"

    def list_pools(self, active_only: bool = False, pool_type: PoolType | None = None,
                   details: bool = False) -> list[PoolInfo]:
        infos = [self.pool_info(p, details) for p in self._pools.values()
                 if pool_type is None or p.config.type is pool_type]
        if active_only:
            infos = [i for i in infos if i.status in (PoolStatus.RUNNING, PoolStatus.SCALING)]
        return infos

    def get_pool(self, ref: str) -> PoolInfo:
        return self.pool_info(self.resolve(ref), details=True)

    async def close_pool(self, ref: str) -> PoolInfo:
        pool = self.resolve(ref)
        if pool.backend is not None:
            await pool.backend.close()
        info = self.pool_info(pool)
        info.status, info.status_reason, info.workers = PoolStatus.STOPPED, "closed", 0
        pool.backend = None
        self.store.close_pool(pool.pool_id, "closed")
        self._event("pool_closed", pool.pool_id, data={"name": pool.config.name})
        del self._pools[pool.pool_id]
        self.store.commit()
        return info

    async def scale_pool(self, ref: str, target: int) -> PoolInfo:
        pool = self.resolve(ref)
        c = pool.config
        if not c.min_workers <= target <= c.max_workers:
            raise InvalidInput(f"target {target} is outside the range {c.min_workers}-{c.max_workers} of pool "
                               f"{c.name!r}", field="target")
        await self._backend(pool).scale(target)
        return self.pool_info(pool, details=True)

    def _check_takes(self, pool: _Pool, backend: PoolBackend, task_type: str) -> None:
        """Fail now, saying why, rather than queue a task that nothing will run."""
        status, reason = backend.status()
        if not status.accepts_work:
            raise PoolUnavailable(f"pool {pool.config.name!r} is {status.value}" + (f" ({reason})" if reason else "")
                                  + "; it takes no tasks: `mahavishnu pools health` shows every pool's state",
                                  field="pool")
        refusal = backend.accepts(task_type)
        if refusal:
            raise PoolUnavailable(f"pool {pool.config.name!r} cannot run task type {task_type!r}: {refusal}",
                                  field="pool")

    def _backend(self, pool: _Pool) -> PoolBackend:
        if pool.backend is None:
            state = f"failed ({pool.failure})" if pool.failure else "not started"
            raise PoolUnavailable(f"pool {pool.config.name!r} is {state}; it takes no tasks: "
                                  "`mahavishnu pools health` shows every pool's state", field="pool")
        return pool.backend

    # -- tasks ----------------------------------------------------------------------------
    async def submit(self, pool_ref: str, task_type: str, payload: dict[str, Any],
                     options: TaskOptions | None = None, *, durable: bool = True,
                     group: str | None = None, shard: bool = False) -> TaskRecord:
        """Validate and queue a task; returns its record (state queued) once the record is
        committed: an id this returns survives a crash of this process. A caller that will
        not show the id before it waits for the outcome passes durable=False (wait commits).
        `group`: the shards of one distribution, which a backend may run together. `shard`: the
        payload is what the task type's split made of a payload validated and checked against the
        file roots already (distribution does both once, before it picks pools, so that no await
        sits between a pick and its submit, and 20,000 items are not validated twice)."""
        options = options or _no_options()
        pool = self.resolve(pool_ref)
        backend = self._backend(pool)
        tt = self.task_types.get(task_type)
        clean = payload if shard else tt.validate_payload(payload)
        self._check_takes(pool, backend, task_type)
        payload_text = self._check_task_limits(clean)
        if pool.config.type is PoolType.MAHAVISHNU and not shard:  # its workers share this disk
            await self.check_file_inputs(tt, clean)
        record = TaskRecord.trusted(
            task_id=new_task_id(), pool_id=pool.pool_id, task_type=task_type, payload=clean,
            state=TaskState.QUEUED, created_at=_now(), timeout=options.timeout, retries=options.retries)
        self.store.insert_task(record, payload_text)
        self._live[record.task_id] = record
        if len(payload_text) > RECENT_RESULT_CHARS:
            self._large.add(record.task_id)
        carrier = self.telemetry.on_submitted(record)
        try:
            backend.submit(Job(record.task_id, task_type, self.task_types.refs[task_type], clean, options.timeout,
                               options.retries, trace=carrier, group=group))
        except PoolError as exc:  # recorded already: end it with the reason rather than leave it queued
            self.task_finished(record.task_id, TaskState.FAILED, None, exc.message, None, pool_fault=True)
            raise
        if durable:
            await self.store.durable()
        return record

    async def wait(self, task_id: str, timeout: float | None = None, *, durable: bool = True) -> TaskRecord:
        """The task once it has finished (its outcome committed), or as it stands when `timeout` runs out.
        `durable=False`: the outcome may not be committed yet; the caller awaits store.durable()
        before it shows it (a distribution commits its shards' outcomes once, not one by one)."""
        record = self._live.get(task_id)
        if record is None:
            if durable:
                await self._outcome_durable(task_id)
            # As a waiter woken at the end gets it: the record itself (get_task hands out copies).
            return self._recent.get(task_id) or self.get_task(task_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TaskRecord | None] = loop.create_future()
        by_task = self._waiters if durable else self._quiet_waiters
        by_task.setdefault(task_id, []).append(future)
        # The future is this caller's own, so the timeout can end it (with None) and the caller
        # awaits it directly: woken one loop iteration sooner than through asyncio.wait, with no
        # task or set made per wait; a caller that gives up cancels only its own future.
        timer = loop.call_later(timeout, _expire, future) if timeout is not None else None
        try:
            record = await future
        finally:
            if timer is not None:
                timer.cancel()
            waiters = by_task.get(task_id)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del by_task[task_id]
        if record is None:
            return self.get_task(task_id)
        if durable:
            await self._outcome_durable(task_id)
        return record

    async def execute(self, pool_ref: str, task_type: str, payload: dict[str, Any],
                      options: TaskOptions | None = None, wait: float | None = None) -> TaskRecord:
        record = await self.submit(pool_ref, task_type, payload, options)
        return await self.wait(record.task_id, wait if wait is not None else record.timeout + 5)

    def task_id(self, ref: str) -> str:
        """The full id for `ref`: a full id, or a unique prefix of one (as narrow tables show ids)."""
        if looks_like_task_id(ref) or ref in self._live:
            return ref
        found = self.store.task_ids_starting(ref)
        if len(found) == 1:
            return found[0]
        if found:
            raise InvalidInput(f"{ref!r} is the start of more than one task id; give more of it", field="task_id")
        raise TaskNotFound(f"no task id starts with {ref!r} (finished tasks are kept "
                           f"{self.settings.retention_days:g} days)", field="task_id")

    def get_task(self, task_id: str) -> TaskRecord:
        task_id = self.task_id(task_id)
        live = self._live.get(task_id) or self._recent.get(task_id)
        if live is not None:
            return live.model_copy()
        row = self.store.task_row(task_id)
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r} (finished tasks are kept "
                               f"{self.settings.retention_days:g} days)", field="task_id")
        return self._record_from_row(row)

    def list_tasks(self, pool: str | None = None, state: TaskState | None = None, task_type: str | None = None,
                   limit: int = 20) -> list[TaskRecord]:
        """Most recent first. Live tasks come from memory, so their state is current."""
        pool_id = self.resolve(pool).pool_id if pool else None
        rows = self.store.recent_tasks(pool_id, limit, state.value if state else None, task_type)
        return [self._live[r["task_id"]].model_copy() if r["task_id"] in self._live else self._record_from_row(r)
                for r in rows]

    async def cancel(self, task_id: str) -> TaskRecord:
        task_id = self.task_id(task_id)
        record = self._live.get(task_id)
        if record is None:
            done = self.get_task(task_id)
            raise Conflict(f"task {task_id} already ended ({done.state.value}); nothing to cancel",
                           field="task_id")
        pool = self._pools.get(record.pool_id)
        if pool is None or pool.backend is None or not pool.backend.cancel(task_id):
            self.task_finished(task_id, TaskState.CANCELLED, None, "cancelled (its pool no longer runs it)", None)
        await self.durable()
        return self.get_task(task_id)

    def _record_from_row(self, row: Any) -> TaskRecord:
        import json

        return TaskRecord.trusted(  # our own rows, written from validated records
            task_id=row["task_id"], pool_id=row["pool_id"], task_type=row["task_type"],
            payload=json.loads(row["payload"]), state=TaskState(row["state"]), worker_id=row["worker_id"],
            created_at=_dt(row["created_at"]) or _now(), started_at=_dt(row["started_at"]),
            finished_at=_dt(row["finished_at"]), duration_s=row["duration"],
            result=json.loads(row["result"]) if row["result"] is not None else None, summary=row["summary"],
            error=row["error"], timeout=row["timeout"], attempts=row["attempts"], retries=row["retries"],
            pool_fault=bool(row["pool_fault"]))

    # -- TaskSink -------------------------------------------------------------------------
    def task_started(self, task_id: str, worker_id: str, attempts: int) -> None:
        record = self._live.get(task_id)
        if record is None:
            return
        started_at = _now()
        record.update(state=TaskState.RUNNING, worker_id=worker_id, started_at=started_at, attempts=attempts)
        self.store.mark_running(task_id, worker_id, started_at.timestamp(), attempts)
        self.telemetry.on_started(record)

    def task_requeued(self, task_id: str, reason: str) -> None:
        record = self._live.get(task_id)
        if record is None:
            return
        record.state, record.worker_id, record.started_at = TaskState.QUEUED, None, None
        self.store.mark_queued(task_id, record.pool_id)
        self._event("task_retried", record.pool_id, task_id, {"reason": reason})

    def task_finished(self, task_id: str, state: TaskState, result: Any, error: str | None,
                      worker_id: str | None, *, pool_fault: bool = False) -> None:
        record = self._live.pop(task_id, None)
        if record is None:
            return
        finished_at = _now()
        started_at = record.started_at
        if state is TaskState.COMPLETED:
            try:
                summary = self.task_types.instance(record.task_type).summarize(result)
            except Exception as exc:  # a summary is a courtesy; the result stands
                summary = f"(no summary: {exc})"
        else:
            summary = (error or state.value).splitlines()[0][:200]
        record.update(state=state, result=result, error=error, pool_fault=pool_fault,
                      worker_id=worker_id or record.worker_id, finished_at=finished_at, summary=summary,
                      duration_s=None if started_at is None else
                      round((finished_at - started_at).total_seconds(), 6))
        large = task_id in self._large
        if large:
            self._large.discard(task_id)
        if self.store.mark_finished(record) <= RECENT_RESULT_CHARS and not large:
            recent = self._recent
            recent[task_id] = record
            if len(recent) > RECENT_RECORDS:
                del recent[next(iter(recent))]
        self._unsettled[task_id] = self.store.generation
        self.telemetry.on_finished(record)
        if state is not TaskState.COMPLETED:
            self._event(f"task_{state.value}", record.pool_id, task_id, {"error": record.summary})
        if task_id in self._waiters:  # someone waits for this outcome: commit it before they wake
            self.store.commit_soon()
        self._wake(task_id, record)

    async def _outcome_durable(self, task_id: str) -> None:
        """Return once the outcome of a task that ended is committed."""
        generation = self._unsettled.get(task_id)
        if generation is not None and self._store is not None:
            await self._store.durable(generation)

    def _forget_settled(self) -> None:
        committed = self.store.committed
        self._unsettled = {t: g for t, g in self._unsettled.items() if g > committed} \
            if not self.store.settled else {}

    def _wake(self, task_id: str, record: TaskRecord) -> None:
        for future in (*self._waiters.pop(task_id, ()), *self._quiet_waiters.pop(task_id, ())):
            if not future.done():
                future.set_result(record)

    def pool_event(self, pool_id: str, kind: str, data: dict[str, Any]) -> None:
        self._event(kind, pool_id, data=data)
        self.telemetry.on_pool_event(pool_id, kind, data)

    # -- routing, distribution, rebalancing -------------------------------------------------
    def candidates(self, task_type: str | None, pool_type: PoolType | None = None) -> list[Candidate]:
        """Every pool (of `pool_type`, if given) with its load and whether it takes `task_type`."""
        out = []
        for pool in self._pools.values():
            if pool_type is not None and pool.config.type is not pool_type:
                continue
            snap = pool.backend.snapshot() if pool.backend else None
            status, reason = self._status(pool, snap)
            refusal = pool.backend.accepts(task_type) if (pool.backend and task_type) else None
            out.append(Candidate(pool_id=pool.pool_id, name=pool.config.name, status=status, status_reason=reason,
                                 in_flight=snap.in_flight if snap else 0, queued=snap.queue_size if snap else 0,
                                 capacity=max(1, pool.config.max_workers), refusal=refusal))
        return out

    def route(self, task_type: str, strategy: RoutingStrategy = RoutingStrategy.LEAST_LOADED,
              affinity_key: str | None = None, pool_type: PoolType | None = None) -> RouteDecision:
        self.task_types.get(task_type)  # unknown or disabled types fail before any pool is chosen
        began = time.perf_counter()
        decision = self.router.choose(self.candidates(task_type, pool_type), strategy, task_type, affinity_key)
        self.telemetry.on_routed(strategy.value, decision.pool_name, decision.fallback, time.perf_counter() - began,
                                 decision.pool_id, decision.reason)
        self._event("task_routed", decision.pool_id, data={"strategy": strategy.value, "reason": decision.reason,
                                                           "fallback": decision.fallback})
        return decision

    async def distribute(self, task_type: str, payload: dict[str, Any],
                         strategy: DistributionStrategy = DistributionStrategy.ROUND_ROBIN,
                         pool_type: PoolType | None = None, timeout: float = 300.0,
                         progress: Any = None) -> DistributionResult:
        from pools.distribution import Distribution

        result = await Distribution(self, task_type, payload, strategy, pool_type, timeout, progress).run()
        self.telemetry.on_distributed(strategy.value, result.failed)
        return result

    def pool_name(self, pool_id: str) -> str:
        pool = self._pools.get(pool_id)
        if pool is not None:
            return pool.config.name
        row = self.store.pool_row(pool_id)
        return str(row["name"]) if row is not None else pool_id

    def note_pool_failure(self, pool_id: str, message: str) -> None:
        self.pool_event(pool_id, "pool_failed_work", {"reason": message})

    async def rebalance(self, strategy: RebalanceStrategy = RebalanceStrategy.LEAST_LOADED) -> RebalanceReport:
        """Move queued tasks off pools with more work than capacity onto pools with room, then
        size local pools to their demand (within min..max)."""
        ok, _ = eligible(self.candidates(None))
        ok.sort(key=lambda c: c.pool_id)
        free = {c.pool_id: c.free for c in ok}
        load = {c.pool_id: [c.in_flight + c.queued, c.capacity] for c in ok}
        moves: list[Move] = []
        cursor = 0
        for source in ok:
            excess = min(source.queued, source.in_flight + source.queued - source.capacity)
            backend = self._pools[source.pool_id].backend
            if excess <= 0 or backend is None:
                continue
            for job in backend.take_queued(excess):
                targets = [c for c in ok if c.pool_id != source.pool_id and free[c.pool_id] > 0
                           and self._pools[c.pool_id].backend is not None
                           and self._pools[c.pool_id].backend.accepts(job.task_type) is None]  # type: ignore[union-attr]
                if not targets:
                    backend.submit(job)  # nowhere better: back in its own queue
                    continue
                if strategy is RebalanceStrategy.ROUND_ROBIN:
                    target = targets[cursor % len(targets)]
                    cursor += 1
                elif strategy is RebalanceStrategy.RANDOM:
                    target = self.router._rng.choice(targets)
                else:
                    target = min(targets, key=lambda c: (load[c.pool_id][0] / load[c.pool_id][1], c.pool_id))
                free[target.pool_id] -= 1
                load[target.pool_id][0] += 1
                load[source.pool_id][0] -= 1
                self._move(job, source.pool_id, target.pool_id)
                moves.append(Move(task_id=job.task_id, from_pool=source.name, to_pool=target.name))
        resized: list[Resize] = []
        for c in ok:
            pool = self._pools[c.pool_id]
            if pool.config.type is not PoolType.MAHAVISHNU or pool.backend is None:
                continue
            before = len(pool.backend.snapshot().workers)
            demand = load[c.pool_id][0]
            target_workers = max(pool.config.min_workers, min(pool.config.max_workers, demand))
            if target_workers != before:
                await pool.backend.scale(target_workers, trigger="rebalance")
                resized.append(Resize(pool=c.name, from_workers=before, to_workers=target_workers))
        self.store.commit()
        message = (f"moved {len(moves)} queued task{'' if len(moves) == 1 else 's'}, resized {len(resized)} "
                   f"pool{'' if len(resized) == 1 else 's'}"
                   if moves or resized else "already balanced: nothing to move or resize")
        return RebalanceReport(strategy=strategy, moved=moves, resized=resized, message=message)

    def _move(self, job: Job, source_id: str, target_id: str) -> None:
        record = self._live.get(job.task_id)
        if record is not None:
            record.pool_id = target_id
        self.store.mark_queued(job.task_id, target_id)
        self._event("task_moved", target_id, job.task_id, {"from": source_id})
        backend = self._pools[target_id].backend
        assert backend is not None
        backend.submit(job)

    # -- health and stats -----------------------------------------------------------------
    def health(self, ref: str | None = None) -> HealthReport:
        pools = [self.resolve(ref)] if ref else list(self._pools.values())
        entries = []
        for pool in pools:
            info = self.pool_info(pool)
            # A local pool with no worker cannot run anything; a Kubernetes pool starts pods on demand.
            needs_workers = pool.config.type is PoolType.MAHAVISHNU and info.min_workers > 0
            healthy = info.status in (PoolStatus.RUNNING, PoolStatus.SCALING) and (
                info.workers > 0 or not needs_workers)
            entries.append(PoolHealth(pool_id=info.pool_id, name=info.name, pool_type=info.pool_type,
                                      status=info.status, healthy=healthy, workers=info.workers,
                                      queue_size=info.metrics.queue_size, reason=info.status_reason))
        n_ok = sum(1 for e in entries if e.healthy)
        status = "healthy" if n_ok == len(entries) else ("unhealthy" if n_ok == 0 else "degraded")
        return HealthReport(status=status, active_pools=n_ok, pools=entries)

    def stats(self) -> StatsReport:
        infos = [self.pool_info(p) for p in self._pools.values()]
        by_type: dict[str, TypeStats] = {}
        for info in infos:
            entry = by_type.setdefault(info.pool_type.value, TypeStats())
            entry.pools += 1
            entry.workers += info.workers
        totals = self.store.pool_totals()
        queued = sum(1 for r in self._live.values() if r.state is TaskState.QUEUED)
        return StatsReport(
            total_pools=len(infos),
            active_pools=sum(1 for i in infos if i.status in (PoolStatus.RUNNING, PoolStatus.SCALING)),
            degraded_pools=sum(1 for i in infos if i.status is PoolStatus.DEGRADED),
            failed_pools=sum(1 for i in infos if i.status is PoolStatus.FAILED),
            total_workers=sum(i.workers for i in infos),
            busy_workers=sum(i.metrics.in_flight for i in infos),
            queued_tasks=queued, running_tasks=len(self._live) - queued,
            tasks_completed=totals[0] or 0, tasks_failed=totals[1] or 0, tasks_cancelled=totals[2] or 0,
            tasks_timed_out=totals[3] or 0,
            avg_duration_s=round(totals[4] / totals[5], 4) if totals[5] else None,
            memory_mb=round(sum(mems), 1) if (mems := [i.metrics.memory_mb for i in infos
                                                         if i.metrics.memory_mb is not None]) else None,
            by_type=by_type,
        )
