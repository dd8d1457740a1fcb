"""The `kubernetes` pool type: one Job per task, followed through list+watch, never by polling.

    submit ─> queue ─(free slot)─> launch: Secret (the task as a file) ─> Job mhv-<task>-<attempt>
                                           └ a Job of this task exists already: adopt it
    informers (Jobs, Pods of this pool) ─> events ─┬ Job condition Complete/SuccessCriteriaMet:
                                                   │   result = the succeeded pod's log line
                                                   ├ Failed/FailureTarget: reason says timeout,
                                                   │   spent retries, or a disruption (pool fault)
                                                   ├ status.failed grew: Kubernetes retries (attempt n)
                                                   ├ container stuck (image, config): fail, delete
                                                   └ Job deleted by someone else: fail, say so
    housekeeping (no API calls) ─> Jobs whose pod never starts fail after pending_timeout

Each pod's log is read once, when the pod ends, and kept: a result survives its pod. Job names
come from the task id and attempt, so a restarted server adopts the Jobs it left running and
creates nothing twice. Cancel and close delete what they own (Foreground: the pods go first)
and close waits for it. The client is synchronous: calls run in threads, watches in their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from pools.backends.base import BackendSnapshot, Job, JobQueue, PoolBackend, TaskSink
from pools.backends.kubernetes import api, jobs, manifests
from pools.backends.kubernetes.informer import Health, Informer
from pools.backends.kubernetes.warm import WarmPool
from pools.credentials import KubeAccess
from pools.errors import InvalidInput, PoolUnavailable
from pools.models import PoolConfig, PoolStatus, TaskState, WorkerInfo
from pools.task_types.stdlib_runs import STDLIB_RUNS

STDLIB_TYPES = set(STDLIB_RUNS)
POD_LAG = 2.0  # how long a Job's verdict waits for its pod's end to arrive on the Pods watch


@dataclass
class _Run:
    """A task with a Job in the cluster (an index of it, for the shards of a distribution)."""

    job: Job
    name: str
    attempt: int
    index: int | None = None
    created: float = field(default_factory=time.monotonic)  # when the API accepted the Job
    launched: bool = False
    failures: int = 0  # failed pods so far, counted by the Job controller (once per pod)
    logs: dict[str, asyncio.Task[str | None]] = field(default_factory=dict)  # pod -> its log, read once
    pods: dict[str, Any] = field(default_factory=dict)  # the last state of each pod, kept after it is gone
    finishing: bool = False  # ended: nothing more is reported for it
    settling: bool = False  # its verdict is in; its pods' logs are being read
    pod_ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def worker(self) -> str:
        return self.name if self.index is None else f"{self.name}#{self.index}"


class KubernetesBackend(JobQueue, PoolBackend):
    def __init__(self, pool_id: str, config: PoolConfig, sink: TaskSink, *, context: dict[str, Any],
                 access: KubeAccess | None = None, poll_interval: float = 0.5, pending_timeout: float = 120.0,
                 ttl_after_finished: int = 300,
                 degraded_after: float = 10.0, failed_after: float = 120.0,
                 enabled_task_types: list[str] | None = None, watch_timeout: int = 240) -> None:
        PoolBackend.__init__(self, pool_id, config, sink)
        JobQueue.__init__(self)
        self._context = context
        self._access = access  # checked by the manager against the operator's settings
        self._poll = poll_interval
        self._pending_timeout = pending_timeout
        self._ttl = ttl_after_finished
        self._watch_timeout = watch_timeout
        self._enabled = list(enabled_task_types) if enabled_task_types is not None else None
        self.health = Health(degraded_after, failed_after)
        self.api: api.Clients | None = None
        self._runs: dict[str, _Run] = {}  # task id -> its Job
        self._by_job: dict[str, dict[int, str]] = {}  # Job name -> its tasks by index (0 for a plain Job)
        self._cancelled: dict[str, set[int]] = {}  # Job name -> cancelled shards whose pods must not run
        self._launching = 0
        self._pending: set[asyncio.Task[Any]] = set()  # launches, log reads, deletions in progress
        self._deleting: set[str] = set()  # Job names we asked the API to delete
        self._handovers: set[asyncio.Task[Any]] = set()  # Secrets being given to their Jobs
        self._jobs: Informer | None = None
        self._pods: Informer | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._closed = False
        self._dispatch_scheduled = False
        self._limit = config.max_workers
        self.warm: WarmPool | None = None

    # -- connection and registration -------------------------------------------------------
    def _explain(self, exc: BaseException, doing: str) -> PoolUnavailable:
        where = self.api.where if self.api else (self.config.endpoint or self.config.kube_context or "the cluster")
        return api.explain(exc, doing, where, self.config.namespace)

    async def _connect(self) -> api.Clients:
        if self.api is None:
            try:
                self.api = await asyncio.to_thread(api.connect, self.config, self._access)
            except Exception as exc:
                raise self._explain(exc, "connecting") from exc
        return self.api

    async def _namespace(self, create: bool) -> str:
        """Use the namespace as it is when it exists; create it only when it does not (and `create`).
        A Role bound in the namespace cannot read Namespace objects (they are cluster-scoped): then
        listing Jobs there, which the Role allows, is the check."""
        k, ns = await self._connect(), self.config.namespace
        try:
            await api.call(k.core.read_namespace, ns)
            return "exists"
        except Exception as exc:
            status = api.status_of(exc)
            if status == 403:
                try:
                    await api.call(k.batch.list_namespaced_job, ns, limit=1)
                except Exception as inner:
                    raise self._explain(inner, "listing Jobs") from inner
                return "is used as it is (this account may not read namespaces)"
            if status != 404:
                raise self._explain(exc, f"reading namespace {ns!r}") from exc
        if not create:
            return "will be created"
        try:
            await api.call(k.core.create_namespace, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns, "labels": {"app.kubernetes.io/managed-by": manifests.MANAGER}}})
        except Exception as exc:
            if api.status_of(exc) != 409:  # created meanwhile: fine
                raise self._explain(exc, f"creating namespace {ns!r} (it does not exist)") from exc
        return "created"

    async def verify(self) -> None:
        k = await self._connect()
        await self._namespace(create=True)
        for doing, fn in (("listing Jobs", k.batch.list_namespaced_job), ("listing Pods", k.core.list_namespaced_pod)):
            try:
                await api.call(fn, self.config.namespace, limit=1)
            except Exception as exc:
                raise self._explain(exc, doing) from exc
        if self.config.warm:
            await self._warm_up()

    async def probe(self) -> str:
        """Read-only reachability check (for discovery): raises PoolUnavailable, else says what it saw."""
        return f"reachable; namespace {self.config.namespace!r} {await self._namespace(create=False)}"

    async def _warm_up(self) -> None:
        if self.warm is None:
            self.warm = WarmPool(self.pool_id, self.config, self.sink, await self._connect(), self._explain,
                                 enabled_task_types=self._enabled, poll=self._poll,
                                 ready_timeout=self._pending_timeout)
        await self.warm.up()

    async def start(self) -> None:
        try:
            if self.api is None or (self.config.warm and (self.warm is None or not self.warm.ready)):
                await self.verify()
        except PoolUnavailable as exc:
            self.health.trouble("start", exc.message, fatal=True)
        if self.config.warm:
            if self.warm is not None and self.warm.ready:
                self.health.ok("start")
            self._housekeeping = asyncio.get_running_loop().create_task(self._keep_warm())
            return
        if self.api is None:  # never connected: retried by housekeeping
            self._housekeeping = asyncio.get_running_loop().create_task(self._reconnect())
            return
        await self._start_informers()

    async def _start_informers(self) -> None:
        assert self.api is not None
        self.health.ok("start")
        selector, ns = manifests.pool_selector(self.pool_id), self.config.namespace

        def explain(exc: BaseException, doing: str) -> str:
            return self._explain(exc, doing).message

        self._jobs = Informer("Jobs", self.api.batch.list_namespaced_job, ns, selector, self._on_job, self.health,
                              explain, backoff=self._poll, watch_timeout=self._watch_timeout)
        self._pods = Informer("Pods", self.api.core.list_namespaced_pod, ns, selector, self._on_pod, self.health,
                              explain, backoff=self._poll, watch_timeout=self._watch_timeout)
        self._jobs.start()
        self._pods.start()
        # Wait for the first lists (a restart adopts what they show), but never hang a start on them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(self._jobs.synced.wait(), self._pods.synced.wait()),
                                   timeout=api.TIMEOUT[0] + api.TIMEOUT[1])
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        self._pump()

    async def _reconnect(self) -> None:
        delay = self._poll
        while not self._closed and self.api is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                await self.verify()
            except PoolUnavailable as exc:
                self.health.trouble("start", exc.message, fatal=True)
                self.api = None
                continue
            await self._start_informers()
            return

    async def close(self, *, abandon: bool = False) -> None:
        """Stop. Unless `abandon` (the owner restarts and adopts them), running tasks end cancelled
        and their Jobs are deleted; close waits until the API confirms they are gone."""
        self._closed = True
        if self._housekeeping:
            self._housekeeping.cancel()
        if self.warm is not None:
            await self.warm.close(abandon=abandon)
        self._drain_queue(abandon)
        names = []
        for task_id, run in list(self._runs.items()):
            if not abandon:
                self._finish(run, TaskState.CANCELLED, None, "the pool was closed while the task ran", fault=True)
                names.append(run.name)
            self._runs.pop(task_id, None)
        names = sorted(set(names))
        if names:
            await asyncio.gather(*(self._delete(name) for name in names), return_exceptions=True)
            if self._jobs is not None:  # wait for the deletions to be seen, within reason
                deadline = time.monotonic() + 30
                while any(n in self._jobs.objects for n in names) and time.monotonic() < deadline \
                        and self.health.status()[0] is PoolStatus.RUNNING:
                    await asyncio.sleep(0.05)
        if self._handovers:  # a Secret left without its owner would outlive its Job
            await asyncio.gather(*self._handovers, return_exceptions=True)
        for task in list(self._pending):
            task.cancel()
        for informer in (self._jobs, self._pods):
            if informer is not None:
                await informer.stop()

    # -- tasks ------------------------------------------------------------------------------
    def accepts(self, task_type: str) -> str | None:
        if self.config.warm:  # the warm peers run the package: what the server has enabled, nothing more
            if self._enabled is not None and task_type not in self._enabled:
                return f"the warm peers of this pool run only {', '.join(sorted(self._enabled))}"
            return None
        stock = self.config.container_image.split("/")[-1].startswith("python:")
        if stock and task_type not in STDLIB_TYPES:
            return (f"image {self.config.container_image} runs only {', '.join(sorted(STDLIB_TYPES))}; for "
                    f"{task_type!r} build kubernetes/Dockerfile and register with --container-image")
        return None

    def submit(self, job: Job) -> None:
        if self._closed:
            raise PoolUnavailable(f"pool {self.config.name!r} is closed")
        refusal = self.accepts(job.task_type)
        if refusal:
            raise PoolUnavailable(refusal, field="task_type")
        if self.config.warm:
            if self.warm is None:
                raise PoolUnavailable(f"the warm peers of pool {self.config.name!r} are not up yet")
            self.warm.submit(job)
            return
        size = len(self._document(job))
        if size > manifests.MAX_TASK_BYTES:
            raise InvalidInput(f"the task is {size:,} bytes as JSON; a Kubernetes pool takes at most "
                               f"{manifests.MAX_TASK_BYTES:,} (it travels in a Secret, which holds 1 MiB with "
                               "the runner)", field="payload")
        JobQueue.submit(self, job)

    def _document(self, job: Job) -> bytes:
        return manifests.task_document(job.task_id, job.task_type, job.type_ref, job.payload, self._context)

    def take_queued(self, limit: int) -> list[Job]:
        if self.warm is not None:
            return list(self.warm.take_queued(limit))
        return JobQueue.take_queued(self, limit)

    def resumable(self, task_id: str) -> bool:
        """A Job of this task is in the cluster: a restart follows it instead of running it again."""
        return self._existing(task_id) is not None

    def cancel(self, task_id: str) -> bool:
        if self.warm is not None:
            return self.warm.cancel(task_id)
        if self._cancel_queued(task_id):
            return True
        run = self._runs.get(task_id)
        if run is None:
            return False
        others = [r for r in self._members(run.name) if r is not run]
        if run.index is None or not others:
            self._finish(run, TaskState.CANCELLED, None, f"cancelled; its Job {run.name} was deleted")
            self._spawn(self._delete(run.name))
        else:  # one shard: stop its pod; the Job's podFailurePolicy fails that index, the others go on
            self._finish(run, TaskState.CANCELLED, None, f"cancelled; its pod in Job {run.name} was deleted")
            self._cancelled.setdefault(run.name, set()).add(run.index)
            for pod in list(run.pods.values()):
                if jobs.phase(pod) not in ("Succeeded", "Failed"):
                    self._spawn(self._delete_pod(pod.metadata.name))
        return True

    def _pump(self) -> None:
        if not self._dispatch_scheduled and not self._closed:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _in_flight(self) -> int:
        return len(self._runs) + self._launching

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._closed or self._jobs is None or not self._jobs.synced.is_set():
            return
        while self._queue and self._in_flight() < self._limit:
            job = self._queue.popleft()
            batch = [job]
            if job.group is not None:  # the shards of one distribution that are here now: one Indexed Job
                room = self._limit - self._in_flight() - 1
                size = len(self._document(job))
                for other in list(self._queue):
                    if len(batch) > room:
                        break
                    if other.group == job.group and (other.task_type, other.timeout, other.retries) == \
                            (job.task_type, job.timeout, job.retries):
                        size += len(self._document(other))
                        if size > manifests.MAX_TASK_BYTES:  # their Secret must hold them all
                            break
                        self._queue.remove(other)
                        batch.append(other)
            self._launching += len(batch)
            self._spawn(self._launch(batch))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def _members(self, name: str) -> list[_Run]:
        """The unfinished tasks a Job runs."""
        runs = (self._runs.get(t) for t in self._by_job.get(name, {}).values())
        return [r for r in runs if r is not None and r.name == name]

    def _existing(self, task_id: str) -> tuple[Any, int | None] | None:
        """The newest Job of this task that the informer knows (and the task's index in it)."""
        if self._jobs is None:
            return None
        key = manifests.label_value(manifests.task_key(task_id))
        found: list[tuple[int, Any, int | None]] = []
        for j in self._jobs.objects.values():
            if j.metadata.deletion_timestamp:
                continue
            attempt = int((j.metadata.labels or {}).get(manifests.ATTEMPT_LABEL, "0"))
            shards = (j.metadata.annotations or {}).get(manifests.TASKS_ANNOTATION)
            if shards is not None and key in shards.split(","):
                found.append((attempt, j, shards.split(",").index(key)))
            elif shards is None and (j.metadata.labels or {}).get(manifests.TASK_LABEL) == key:
                found.append((attempt, j, None))
        if not found:
            return None
        _, job, index = max(found, key=lambda f: f[0])
        return job, index

    async def _launch(self, batch: list[Job]) -> None:
        try:
            fresh = []
            for job in batch:
                existing = self._existing(job.task_id)
                if existing is not None:
                    self._adopt(job, *existing)
                else:
                    fresh.append(job)
            if not fresh:
                return
            first = fresh[0]
            name = manifests.job_name(first.task_id, first.attempts + 1)
            runs = [_Run(job, name, job.attempts + 1, index=i if len(fresh) > 1 else None)
                    for i, job in enumerate(fresh)]
            for run in runs:
                self._runs[run.job.task_id] = run
                self._by_job.setdefault(name, {})[run.index or 0] = run.job.task_id
            try:
                created = await self._create(name, runs)
            except PoolUnavailable as exc:
                self._by_job.pop(name, None)
                for run in runs:
                    self._runs.pop(run.job.task_id, None)
                    self.sink.task_finished(run.job.task_id, TaskState.FAILED, None, exc.message, None,
                                            pool_fault="too large" not in exc.message.lower())
                return
            for run in runs:
                run.job.attempts = run.attempt
                run.created, run.launched = time.monotonic(), True
                self.sink.task_started(run.job.task_id, f"{self.config.name}/{run.worker}", run.attempt)
            if created is not None:
                self._on_job("ADDED", created)
        finally:
            self._launching -= len(batch)
            self._pump()

    async def _create(self, name: str, runs: list[_Run]) -> Any:
        """Secret, then Job, then the Secret owned by the Job (so it goes when the Job goes). A Job
        of that name already there (a create whose answer was lost) is this one: adopt it."""
        k, ns, c = await self._connect(), self.config.namespace, self.config
        first = runs[0].job
        meta_labels = {**manifests.labels(c, self.pool_id, "task"),
                       manifests.TASK_LABEL: manifests.label_value(manifests.task_key(first.task_id))}
        secret = manifests.payload_secret(name, meta_labels, [self._document(r.job) for r in runs])
        await self._retrying(f"creating the payload Secret {name}", k.core.create_namespaced_secret, ns, secret,
                             ok=(409,))
        body = manifests.task_job(c, self.pool_id, name, [r.job.task_id for r in runs], runs[0].attempt,
                                  first.timeout, first.retries, self._ttl, first.trace, parallelism=len(runs))
        created = await self._retrying(f"creating Job {name}", k.batch.create_namespaced_job, ns, body, ok=(409,))
        if created is None:  # 409: it exists
            created = await self._retrying(f"reading Job {name}", k.batch.read_namespaced_job, name, ns)
        self._handovers.add(self._spawn(self._hand_over(name, created)))  # off the task's path
        self._handovers = {t for t in self._handovers if not t.done()}
        return created

    async def _hand_over(self, name: str, job: Any) -> None:
        """Make the Job own its Secret, so the garbage collector removes it with the Job."""
        k = await self._connect()
        try:
            await self._retrying(f"handing the Secret {name} to its Job", k.core.patch_namespaced_secret,
                                 name, self.config.namespace, manifests.owned_by(job, name))
        except PoolUnavailable as exc:  # without an owner the Secret outlives the Job: say so, go on
            self.sink.pool_event(self.pool_id, "k8s_cleanup_failed", {"secret": name, "error": exc.message})

    async def _retrying(self, doing: str, fn: Any, *args: Any, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """Call, retrying what is transient (Retry-After first, else doubling waits) until the pool
        would turn failed anyway. A status in `ok` returns None instead of raising."""
        delay, began = self._poll, time.monotonic()
        while True:
            try:
                result = await api.call(fn, *args, **kwargs)
                self.health.ok("calls")
                return result
            except Exception as exc:
                status = api.status_of(exc)
                if status in ok:
                    return None
                explained = self._explain(exc, doing)
                if not api.transient(exc) or self._closed or \
                        time.monotonic() - began > self.health.failed_after:
                    raise explained from exc
                self.health.trouble("calls", explained.message)
                wait = api.retry_after(exc) if status == 429 else None
                await asyncio.sleep(wait if wait is not None else delay)
                delay = min(delay * 2, 30.0)

    async def _delete(self, name: str) -> None:
        """Delete a Job with Foreground propagation: its pods are gone before it is."""
        k = await self._connect()
        self._deleting.add(name)
        try:
            await self._retrying(f"deleting Job {name}", k.batch.delete_namespaced_job, name, self.config.namespace,
                                 propagation_policy="Foreground", ok=(404,))
        except PoolUnavailable as exc:
            self.sink.pool_event(self.pool_id, "k8s_cleanup_failed", {"job": name, "error": exc.message})

    async def _delete_pod(self, name: str) -> None:
        k = await self._connect()
        try:
            await self._retrying(f"deleting pod {name}", k.core.delete_namespaced_pod, name, self.config.namespace,
                                 ok=(404,))
        except PoolUnavailable as exc:
            self.sink.pool_event(self.pool_id, "k8s_cleanup_failed", {"pod": name, "error": exc.message})

    def _adopt(self, job: Job, existing: Any, index: int | None) -> None:
        """Follow a Job a previous owner (or a lost answer) left: to its end, never a second one."""
        name = existing.metadata.name
        attempt = int((existing.metadata.labels or {}).get(manifests.ATTEMPT_LABEL, "1"))
        run = _Run(job, name, attempt, index=index, launched=True)
        if index is None:
            run.failures = jobs.failures(existing)
        self._runs[job.task_id] = run
        self._by_job.setdefault(name, {})[index or 0] = job.task_id
        job.attempts = attempt + run.failures
        self.sink.task_started(job.task_id, f"{self.config.name}/{run.worker}", job.attempts)
        self.sink.pool_event(self.pool_id, "k8s_job_adopted", {"job": name, "task_id": job.task_id})
        if self._pods is not None:
            for pod in list(self._pods.objects.values()):
                if jobs.job_of(pod) == name:
                    self._on_pod("ADDED", pod)
        self._on_job("MODIFIED", existing)

    # -- what the informers report ------------------------------------------------------------
    def _on_job(self, kind: str, obj: Any) -> None:
        name = obj.metadata.name
        runs = [r for r in self._members(name) if not r.finishing and not r.settling]
        if kind == "DELETED":
            self._deleting.discard(name)
            self._by_job.pop(name, None)
            self._cancelled.pop(name, None)
            for run in runs:
                self._spawn(self._settle(run, None, deleted=True))
            return
        verdict = jobs.outcome(obj)
        if runs and runs[0].index is None:
            run = runs[0]
            failed = jobs.failures(obj)
            if failed > run.failures and failed <= run.job.retries and verdict is None:
                run.failures = failed
                run.job.attempts = run.attempt + failed
                self.sink.task_requeued(run.job.task_id, f"a pod of Job {name} failed; Kubernetes retries it "
                                                         f"(attempt {failed + 1} of {run.job.retries + 1})")
                self.sink.task_started(run.job.task_id, f"{self.config.name}/{run.worker}", run.job.attempts)
            if verdict is not None:
                run.failures = failed
                self._spawn(self._settle(run, verdict))
            return
        status = obj.status
        done = jobs.indexes(status.completed_indexes if status else None)
        failed_indexes = jobs.indexes(status.failed_indexes if status else None)
        for run in runs:  # each shard ends on its own index's verdict, or the Job's
            if run.index in done:
                self._spawn(self._settle(run, jobs.Outcome(True, "CompletionsReached", "")))
            elif run.index in failed_indexes:
                self._spawn(self._settle(run, jobs.Outcome(False, "FailedIndex", f"index {run.index} failed")))
            elif verdict is not None:
                self._spawn(self._settle(run, verdict))

    def _run_of(self, pod: Any) -> _Run | None:
        name = jobs.job_of(pod) or ""
        task_id = self._by_job.get(name, {}).get(jobs.index_of(pod) or 0)
        run = self._runs.get(task_id) if task_id else None
        return run if run is not None and run.name == name else None

    def _on_pod(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        index = jobs.index_of(pod)
        job_name = jobs.job_of(pod) or ""
        if index is not None and index in self._cancelled.get(job_name, set()) and kind != "DELETED" and \
                jobs.phase(pod) not in ("Succeeded", "Failed") and not pod.metadata.deletion_timestamp:
            self._spawn(self._delete_pod(name))  # a cancelled shard's pod, started before the cancel was seen
            return
        run = self._run_of(pod)
        if run is None or run.finishing:
            return
        run.pods[name] = pod  # kept after the pod is gone: its log and status explain the outcome
        if kind == "DELETED":
            return
        if index is not None and jobs.index_failures(pod) > run.failures:  # a shard's retry
            run.failures = jobs.index_failures(pod)
            run.job.attempts = run.attempt + run.failures
            self.sink.task_requeued(run.job.task_id, f"shard {index} of Job {job_name} failed; Kubernetes retries "
                                                     f"it (attempt {run.failures + 1} of {run.job.retries + 1})")
            self.sink.task_started(run.job.task_id, f"{self.config.name}/{run.worker}", run.job.attempts)
        blocked = jobs.stuck(pod)
        if blocked is not None:
            reason, message = blocked
            what = (f"image {self.config.container_image!r} cannot be pulled" if "Image" in reason
                    else f"pod {name} cannot start its container")
            self._finish(run, TaskState.FAILED, None, f"{what}: {reason}: {message}".rstrip(": "), fault=True)
            if not self._members(run.name):
                self._spawn(self._delete(run.name))
            return
        if jobs.phase(pod) in ("Succeeded", "Failed") and name not in run.logs:
            run.logs[name] = self._spawn(self._pod_output(pod))
            run.pod_ended.set()

    async def _pod_output(self, pod: Any) -> str | None:
        """The result line from the pod's termination message when it carries one (no request),
        else from its log."""
        ended = jobs.terminated(pod)
        if ended is not None and jobs.result_line(ended[1]) is not None:
            return ended[1]
        return await self._read_log(pod.metadata.name)

    async def _read_log(self, pod: str) -> str | None:
        k = await self._connect()
        try:
            return str(await self._retrying(f"reading the log of {pod}", k.core.read_namespaced_pod_log, pod,
                                            self.config.namespace))
        except PoolUnavailable:
            return None

    async def _settle(self, run: _Run, verdict: jobs.Outcome | None, deleted: bool = False) -> None:
        """The Job (or the task's index of it) has its verdict, or is gone: read what its pods left
        and end the task."""
        if run.finishing or run.settling:
            return
        run.settling = True  # no second verdict while the logs are read
        wanted = "Succeeded" if verdict is None or verdict.succeeded else "Failed"
        if not any(jobs.phase(p) == wanted for p in run.pods.values()):
            # The two watches are not ordered: the pod's end is usually a moment behind its Job's.
            # Read it from the Pods watch when it comes; list the pods only if it does not.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.pod_ended.wait(), timeout=POD_LAG)
            if not any(jobs.phase(p) == wanted for p in run.pods.values()):
                await self._catch_up(run)
        logs = {name: await task for name, task in list(run.logs.items())}
        pods = sorted(run.pods.values(), key=lambda p: p.metadata.creation_timestamp or 0)
        succeeded = [p for p in pods if jobs.phase(p) == "Succeeded"]
        failed = [p for p in pods if jobs.phase(p) == "Failed"]
        if verdict is None or verdict.succeeded:
            for pod in reversed(succeeded):
                result = jobs.result_line(logs.get(pod.metadata.name) or "")
                if result is not None and result.get("ok"):
                    self._finish(run, TaskState.COMPLETED, result.get("result"), None)
                    return
        last = failed[-1] if failed else None
        disrupted = next((jobs.disruption(p) for p in reversed(pods) if jobs.disruption(p)), None)
        if deleted:
            self._finish(run, TaskState.FAILED, None, f"its Job {run.name} was deleted before it finished "
                         "(kubectl delete, or another controller); nothing of its result was kept", fault=True)
        elif verdict is not None and verdict.succeeded:
            self._finish(run, TaskState.FAILED, None, f"Job {run.worker} completed ({verdict.reason}) but its pod "
                         "left no result line" + (f"; log tail: {(logs.get(succeeded[-1].metadata.name) or '')[-500:]}"
                                                  if succeeded else ""))
        elif verdict is not None and (verdict.timed_out or (last is not None and jobs.pod_timed_out(last))):
            self._finish(run, TaskState.TIMED_OUT, None, f"timed out after {run.job.timeout:g}s (the "
                         f"{'Job' if run.index is None else 'pod'}'s activeDeadlineSeconds, DeadlineExceeded); "
                         "its pods were stopped")
        elif verdict is not None and (verdict.disrupted or disrupted):
            self._finish(run, TaskState.FAILED, None, "the cluster disrupted the task's pod "
                         f"({disrupted or verdict.message}); a pool fault, not the task's", fault=True)
        elif verdict is not None:
            why = jobs.why_pod_failed(last, logs.get(last.metadata.name)) if last is not None else \
                f"the Job failed: {verdict.reason}: {verdict.message}"
            attempts = max(run.failures, len(failed), 1)
            self._finish(run, TaskState.FAILED, None, why if attempts <= 1 else
                         f"{why}\n(failed {attempts} times; {verdict.reason}: {verdict.message})")

    async def _catch_up(self, run: _Run) -> None:
        k = await self._connect()
        with contextlib.suppress(PoolUnavailable):
            listing = await self._retrying(f"listing the Pods of Job {run.name}", k.core.list_namespaced_pod,
                                           self.config.namespace, label_selector=f"job-name={run.name}")
            for pod in listing.items or []:
                if jobs.index_of(pod) != run.index:
                    continue
                run.pods[pod.metadata.name] = pod
                if jobs.phase(pod) in ("Succeeded", "Failed") and pod.metadata.name not in run.logs:
                    run.logs[pod.metadata.name] = self._spawn(self._pod_output(pod))

    def _finish(self, run: _Run, state: TaskState, result: Any, error: str | None, fault: bool = False) -> None:
        if self._runs.get(run.job.task_id) is not run:
            return
        del self._runs[run.job.task_id]
        run.finishing = True
        for task in run.logs.values():
            if not task.done():
                task.cancel()
        self.sink.task_finished(run.job.task_id, state, result, error, f"{self.config.name}/{run.worker}",
                                pool_fault=fault)
        self._pump()

    # -- housekeeping: no API calls unless a Job is stuck ------------------------------------
    async def _housekeep(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._poll)
            now = time.monotonic()
            for run in list(self._runs.values()):
                if run.finishing or run.settling or not run.launched or now - run.created <= self._pending_timeout:
                    continue
                pods = [p for p in run.pods.values() if jobs.job_of(p) == run.name]
                if any(jobs.phase(p) != "Pending" for p in pods):
                    continue
                if self.health.status()[0] is not PoolStatus.RUNNING:
                    continue  # the API is unwell: it cannot tell us, do not blame the Job
                why = next((jobs.unschedulable(p) for p in pods if jobs.unschedulable(p)), None)
                if why is None and not pods:
                    why = await self._why_no_pod(run.name)
                self._finish(run, TaskState.FAILED, None, f"the Job never started within {self._pending_timeout:g}s: "
                             f"{why or 'its pod stayed Pending'}", fault=True)
                if not self._members(run.name):
                    self._spawn(self._delete(run.name))
            if self._queue:
                self._pump()

    async def _why_no_pod(self, name: str) -> str:
        """A Job with no pod: the controller's events say why (PodSecurity, quota, admission)."""
        k = await self._connect()
        try:
            events = await api.call(k.core.list_namespaced_event, self.config.namespace,
                                    field_selector=f"involvedObject.name={name}")
        except Exception as exc:
            return f"it created no pod, and its events could not be read: {self._explain(exc, 'listing events')}"
        warnings = [e for e in events.items or [] if e.type == "Warning"]
        if warnings:
            last = warnings[-1]
            return f"it created no pod: {last.reason}: {last.message}"
        return "it created no pod"

    async def _keep_warm(self) -> None:
        """Warm up until it works (backing off), then follow the Deployment by watching it."""
        delay = self._poll
        while not self._closed and (self.warm is None or not self.warm.ready):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            try:
                await self._warm_up()
                self.health.ok("start")
            except PoolUnavailable as exc:
                self.health.trouble("start", exc.message, fatal=True)
        if self.warm is not None and not self._closed:
            def explain(exc: BaseException, doing: str) -> str:
                return self._explain(exc, doing).message

            self.warm.follow(self.health, explain, backoff=self._poll, watch_timeout=self._watch_timeout)

    # -- scaling and reporting ----------------------------------------------------------------
    async def scale(self, target: int, trigger: str = "manual") -> int:
        """How many task pods may run at once."""
        if not self.config.min_workers <= target <= self.config.max_workers:
            raise InvalidInput(f"target must be within {self.config.min_workers}-{self.config.max_workers}",
                               field="target")
        before, self._limit = self._limit, target
        if target != before:
            self.sink.pool_event(self.pool_id, "pool_scaled", {"direction": "up" if target > before else "down",
                                                               "trigger": trigger, "from": before, "to": target})
        self._pump()
        return target

    def snapshot(self) -> BackendSnapshot:
        status, reason = self.health.status()
        if self.warm is not None and self.warm.ready and status is PoolStatus.RUNNING:
            return self.warm.snapshot()
        if self._closed:
            status, reason = PoolStatus.STOPPED, "closed"
        workers = [WorkerInfo(worker_id=p.metadata.name, state="busy",
                              task_id=self._by_job.get(jobs.job_of(p) or "", {}).get(jobs.index_of(p) or 0))
                   for p in (self._pods.objects.values() if self._pods else []) if jobs.phase(p) == "Running"]
        return BackendSnapshot(status=status, status_reason=reason, workers=workers, queue_size=len(self._queue),
                               in_flight=self._in_flight())
