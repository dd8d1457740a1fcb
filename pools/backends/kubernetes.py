"""The `kubernetes` pool type: each task runs as a Job, through the official client.

    submit ─> queue ─(next loop turn: everything queued, up to free capacity)─> one Job
              1 task: a plain Job · n tasks (distribution shards): an Indexed Job, completions n,
              parallelism capped by max_workers
    poll (every poll_interval) ─> Job + its Pods ─┬ Pod Succeeded/Failed: its log's last line
                                                  │   MAHAVISHNU_RESULT {...} ends that task
                                                  ├ image cannot be pulled, or Pending past
                                                  │   pending_timeout: fail with the reason, delete
                                                  └ DeadlineExceeded (activeDeadlineSeconds): timed_out

Tasks reach the pod as environment (argv is fixed: `python -c <runner>`; nothing from the
payload becomes a shell string). The client is synchronous; every call runs in a thread so the
event loop never blocks. Cancel deletes the Job with foreground propagation. Workers are the
pool's running Pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pools.backends.base import BackendSnapshot, Job, JobQueue, PoolBackend, TaskSink
from pools.errors import InvalidInput, PoolUnavailable
from pools.models import PoolConfig, PoolStatus, TaskState, WorkerInfo
from pools.task_types.stdlib_runs import STDLIB_RUNS

# The Job's program: the stdlib task implementations, then the runner that picks one.
RUNNER = (Path(__file__).parents[1] / "task_types" / "stdlib_runs.py").read_text() + "\n" + \
    Path(__file__).with_name("k8s_runner.py").read_text()
MARKER = "MAHAVISHNU_RESULT "
IMAGE_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
STDLIB_TYPES = set(STDLIB_RUNS)
POOL_LABEL = "mahavishnu.io/pool"
TASK_LABEL = "mahavishnu.io/task"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
TIMEOUT = (3, 15)  # seconds to connect, to read: an unreachable cluster fails fast, never hangs
WARM_PORT = 8678


def dns_name(*parts: str) -> str:
    """A DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters."""
    raw = "-".join(parts).lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in raw).strip("-")
    return cleaned[:63].rstrip("-")


@dataclass
class _Batch:
    name: str
    jobs: list[Job]
    created: float = field(default_factory=time.monotonic)
    done: set[int] = field(default_factory=set)
    failures: dict[int, int] = field(default_factory=dict)
    deleting: bool = False

    def unfinished(self) -> list[int]:
        return [i for i in range(len(self.jobs)) if i not in self.done]


class KubernetesBackend(JobQueue, PoolBackend):
    def __init__(self, pool_id: str, config: PoolConfig, sink: TaskSink, *, context: dict[str, Any],
                 poll_interval: float = 0.25, pending_timeout: float = 60.0, ttl_after_finished: int = 300) -> None:
        PoolBackend.__init__(self, pool_id, config, sink)
        JobQueue.__init__(self)
        self._context = context
        self._poll = poll_interval
        self._pending_timeout = pending_timeout
        self._ttl = ttl_after_finished
        self._batches: dict[str, _Batch] = {}
        self._owner: dict[str, tuple[str, int]] = {}  # task id -> (job name, index)
        self._running_pods: list[WorkerInfo] = []
        self._core: Any = None
        self._batch_api: Any = None
        self._error: str | None = None
        self._closed = False
        self._dispatch_scheduled = False
        self._monitor: asyncio.Task[None] | None = None
        self._limit = config.max_workers
        self._warm: Any = None  # warm mode: the peer behind the Service, reached like a session-buddy pool
        self._warm_token: str | None = None

    # -- connection ---------------------------------------------------------------------
    def _connect_sync(self) -> None:
        from kubernetes import client, config

        c = self.config
        if c.endpoint:  # an explicit API URL (and token)
            cfg = client.Configuration()
            cfg.host = c.endpoint.rstrip("/")
            token = os.environ.get(c.api_token_env) if c.api_token_env else None
            if token:
                cfg.api_key = {"authorization": token}
                cfg.api_key_prefix = {"authorization": "Bearer"}
            cfg.verify_ssl = c.endpoint.startswith("https://")
            api_client = client.ApiClient(cfg)
        else:
            try:
                api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=c.kubeconfig, context=c.kube_context)
            except Exception as kube_error:  # no kubeconfig: inside a cluster, perhaps
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                    api_client = client.ApiClient()
                except Exception:
                    raise PoolUnavailable(f"no Kubernetes configuration: {kube_error}; set KUBECONFIG, pass "
                                          "--kubeconfig/--kube-context, or --endpoint with --api-token-env",
                                          field="kubeconfig") from kube_error
        api_client.configuration.retries = 1
        self._core = client.CoreV1Api(api_client)
        self._batch_api = client.BatchV1Api(api_client)

    def _explain(self, exc: BaseException, doing: str) -> PoolUnavailable:
        """Client errors -> one sentence naming what went wrong and where."""
        where = self.config.endpoint or self.config.kube_context or "the configured cluster"
        status = getattr(exc, "status", None)
        if status == 401:
            return PoolUnavailable(f"Kubernetes at {where} rejected the credentials (401) while {doing}")
        if status == 403:
            return PoolUnavailable(f"Kubernetes at {where} forbids {doing} in namespace {self.config.namespace!r} "
                                   "(403); grant the pool's account access or choose another --namespace")
        if status is not None:
            reason = getattr(exc, "reason", "") or ""
            return PoolUnavailable(f"Kubernetes at {where} answered {status} {reason} while {doing}")
        return PoolUnavailable(f"cannot reach the Kubernetes API at {where} while {doing}: "
                               f"{type(exc).__name__}: {str(exc)[:300]}")

    async def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=TIMEOUT, **kwargs)
        except PoolUnavailable:
            raise
        except Exception as exc:
            raise self._explain(exc, doing) from exc

    async def _ensure_namespace(self) -> None:
        ns = self.config.namespace
        try:
            await asyncio.to_thread(self._core.create_namespace, {"metadata": {"name": ns}}, _request_timeout=TIMEOUT)
        except Exception as exc:
            if getattr(exc, "status", None) != 409:  # 409: it exists, which is what we want
                raise self._explain(exc, f"creating namespace {ns!r}") from exc
        await self._call("listing Jobs", self._batch_api.list_namespaced_job, ns, limit=1)

    async def _connect(self) -> None:
        try:
            await asyncio.to_thread(self._connect_sync)
        except PoolUnavailable:
            raise
        except Exception as exc:
            raise self._explain(exc, "connecting") from exc

    async def verify(self) -> None:
        await self._connect()
        await self._ensure_namespace()
        if self.config.warm:
            await self._warm_up()

    # -- warm mode: a Deployment of the peer server, a Service and an HPA ------------------------
    def _warm_names(self) -> tuple[str, dict[str, str]]:
        name = dns_name("mhv-warm", self.pool_id)
        return name, {POOL_LABEL: self.pool_id, "app.kubernetes.io/name": name,
                      "app.kubernetes.io/managed-by": "mahavishnu"}

    async def _warm_up(self) -> None:
        """Create (or find) the warm objects, wait for a ready replica, and talk to it over MCP."""
        from kubernetes import client

        apps = client.AppsV1Api(self._core.api_client)
        autoscaling = client.AutoscalingV2Api(self._core.api_client)
        ns, c = self.config.namespace, self.config
        name, labels = self._warm_names()
        token = self._warm_token or secrets.token_hex(24)
        resources = {"requests": {"cpu": c.cpu_request or "250m", **({"memory": c.memory_request}
                                                                     if c.memory_request else {})}}
        limits = {k: v for k, v in (("cpu", c.cpu_limit), ("memory", c.memory_limit)) if v}
        if limits:
            resources["limits"] = limits
        bodies = [
            ("Secret", self._core.create_namespaced_secret, {
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
                "stringData": {"token": token}}),
            ("Deployment", apps.create_namespaced_deployment, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
                "spec": {"replicas": max(1, c.min_workers), "selector": {"matchLabels": labels}, "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{
                        "name": "peer", "image": c.container_image,
                        "command": ["mahavishnu", "peer", "serve", "--host", "0.0.0.0", "--port", str(WARM_PORT)],
                        "env": [{"name": "MAHAVISHNU_PEER_TOKEN",
                                 "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}},
                                {"name": "MAHAVISHNU_HOME", "value": f"/tmp/mahavishnu-{name}"}],
                        "ports": [{"containerPort": WARM_PORT, "name": "mcp"}],
                        "readinessProbe": {"httpGet": {"path": "/health", "port": WARM_PORT}},
                        "resources": resources}]}}}}),
            ("Service", self._core.create_namespaced_service, {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
                "spec": {"selector": labels, "ports": [{"name": "mcp", "port": WARM_PORT,
                                                        "targetPort": WARM_PORT}]}}),
            ("HorizontalPodAutoscaler", autoscaling.create_namespaced_horizontal_pod_autoscaler, {
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name, "labels": labels},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "minReplicas": max(1, c.min_workers), "maxReplicas": c.max_workers,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                             "type": "Utilization", "averageUtilization": c.cpu_target_percent}}}]}}),
        ]
        for kind, create, body in bodies:
            try:
                await asyncio.to_thread(create, ns, body, _request_timeout=TIMEOUT)
            except Exception as exc:
                if getattr(exc, "status", None) != 409:
                    raise self._explain(exc, f"creating the warm {kind} {name}") from exc
        secret = await self._call("reading the warm Secret", self._core.read_namespaced_secret, name, ns)
        import base64

        data = secret.data or {}
        self._warm_token = base64.b64decode(data["token"]).decode() if "token" in data else token
        deadline = time.monotonic() + self._pending_timeout
        while True:
            deployment = await self._call("reading the warm Deployment", apps.read_namespaced_deployment, name, ns)
            ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
            if ready:
                break
            if time.monotonic() > deadline:
                raise PoolUnavailable(f"the warm Deployment {name} has no ready replica after "
                                      f"{self._pending_timeout:g}s; `kubectl -n {ns} describe deployment {name}`")
            await asyncio.sleep(self._poll)
        service = await self._call("reading the warm Service", self._core.read_namespaced_service, name, ns)
        url = c.labels.get("warm_endpoint") or f"http://{service.spec.cluster_ip}:{WARM_PORT}/mcp"
        from pools.backends.session_buddy import PEER_WORKERS, SessionBuddyBackend
        from pools.models import PoolType

        peer_config = c.model_copy(update={"type": PoolType.SESSION_BUDDY, "endpoint": url})
        self._warm = SessionBuddyBackend(self.pool_id, peer_config, self.sink, token=self._warm_token,
                                         health_interval=max(self._poll, 0.5), slots=PEER_WORKERS * ready)
        await self._warm.verify()
        await self._warm.start()
        self._error = None

    async def _follow_replicas(self) -> None:
        """As the HPA scales the Deployment, let as many tasks in flight as its replicas have workers."""
        from kubernetes import client
        from pools.backends.session_buddy import PEER_WORKERS

        name, _ = self._warm_names()
        apps = client.AppsV1Api(self._core.api_client)
        deployment = await self._call("reading the warm Deployment", apps.read_namespaced_deployment, name,
                                      self.config.namespace)
        ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
        if ready and self._warm.slots != PEER_WORKERS * ready:
            self._warm.slots = PEER_WORKERS * ready
            self._warm._pump()

    async def _warm_down(self) -> None:
        from kubernetes import client

        apps = client.AppsV1Api(self._core.api_client)
        autoscaling = client.AutoscalingV2Api(self._core.api_client)
        name, _ = self._warm_names()
        ns = self.config.namespace
        deletes: list[Any] = [autoscaling.delete_namespaced_horizontal_pod_autoscaler,
                              self._core.delete_namespaced_service, apps.delete_namespaced_deployment,
                              self._core.delete_namespaced_secret]
        for delete in deletes:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(delete, name, ns, body={"propagationPolicy": "Foreground"},
                                        _request_timeout=TIMEOUT)

    async def probe(self) -> str:
        """Read-only reachability check (for discovery): raises PoolUnavailable, else says what it saw."""
        await self._connect()
        try:
            await asyncio.to_thread(self._batch_api.list_namespaced_job, self.config.namespace, limit=1,
                                    _request_timeout=TIMEOUT)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return f"reachable; namespace {self.config.namespace!r} will be created"
            raise self._explain(exc, "listing Jobs") from exc
        return f"reachable; namespace {self.config.namespace!r} exists"

    async def start(self) -> None:
        if self._core is None or (self.config.warm and self._warm is None):  # not verified yet
            try:
                await self.verify()
                self._error = None
            except PoolUnavailable as exc:
                self._error = exc.message
        self._monitor = asyncio.create_task(self._watch())

    async def close(self, *, abandon: bool = False) -> None:
        self._closed = True
        if self._monitor:
            self._monitor.cancel()
        if self._warm is not None:
            await self._warm.close(abandon=abandon)
        if self.config.warm and not abandon and self._core is not None:
            await self._warm_down()
        self._drain_queue(abandon)
        for batch in list(self._batches.values()):
            for i in batch.unfinished():
                batch.done.add(i)
                if not abandon:
                    self.sink.task_finished(batch.jobs[i].task_id, TaskState.CANCELLED, None,
                                            "the pool was closed while the task ran", None, pool_fault=True)
            if not abandon:
                with contextlib.suppress(PoolUnavailable):
                    await self._delete(batch)

    # -- tasks --------------------------------------------------------------------------
    def accepts(self, task_type: str) -> str | None:
        if self.config.warm:
            return None  # the warm image runs the peer server, so it has the package and every type
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
        if self._warm is not None:
            self._warm.submit(job)
            return
        self._queue.append(job)
        self._schedule_dispatch()

    def take_queued(self, limit: int) -> list[Job]:
        if self._warm is not None:
            return list(self._warm.take_queued(limit))
        return JobQueue.take_queued(self, limit)

    def cancel(self, task_id: str) -> bool:
        if self._warm is not None:
            return bool(self._warm.cancel(task_id))
        if self._cancel_queued(task_id):
            return True
        owner = self._owner.get(task_id)
        if owner is None or owner[0] not in self._batches:
            return False
        batch = self._batches[owner[0]]
        batch.done.add(owner[1])
        self.sink.task_finished(task_id, TaskState.CANCELLED, None, "cancelled; its Job was deleted"
                                if not batch.unfinished() else "cancelled (the rest of its Indexed Job goes on)",
                                None)
        if not batch.unfinished():
            asyncio.get_running_loop().create_task(self._delete(batch))
        return True

    def _schedule_dispatch(self) -> None:
        # Submissions made in the same loop turn (a distribution's shards) share one Indexed Job.
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._dispatch()))

    def _in_flight(self) -> int:
        return sum(len(b.unfinished()) for b in self._batches.values())

    async def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._closed or self._error or not self._queue:
            return
        free = self._limit - self._in_flight()
        if free <= 0:
            return
        jobs = [self._queue.popleft() for _ in range(min(len(self._queue), max(free, 1)))]
        name = dns_name("mhv", jobs[0].task_id.removeprefix("task_")[:12], f"{len(jobs)}")
        batch = _Batch(name, jobs)
        self._batches[name] = batch
        for i, job in enumerate(jobs):
            job.attempts += 1
            self._owner[job.task_id] = (name, i)
        try:
            await self._call(f"creating Job {name}", self._batch_api.create_namespaced_job, self.config.namespace,
                             self._job_body(batch))
        except PoolUnavailable as exc:
            del self._batches[name]
            for job in jobs:
                self._owner.pop(job.task_id, None)
                self.sink.task_finished(job.task_id, TaskState.FAILED, None, exc.message, None, pool_fault=True)
            return
        for job in jobs:
            self.sink.task_started(job.task_id, f"{self.config.name}/{name}", job.attempts)
        if self._queue:
            self._schedule_dispatch()

    def _job_body(self, batch: _Batch) -> dict[str, Any]:
        tasks = [{"task_type": j.task_type, "type_ref": j.type_ref, "payload": j.payload, "task_id": j.task_id,
                  "context": self._context} for j in batch.jobs]
        env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
        if len(tasks) == 1:
            env.append({"name": "MAHAVISHNU_TASK", "value": json.dumps(tasks[0])})
        else:
            env.append({"name": "MAHAVISHNU_TASKS", "value": json.dumps(tasks)})
        trace = batch.jobs[0].trace
        if trace.get("traceparent"):
            env.append({"name": "TRACEPARENT", "value": trace["traceparent"]})
        resources: dict[str, dict[str, str]] = {}
        c = self.config
        for section, key, value in (("requests", "cpu", c.cpu_request), ("requests", "memory", c.memory_request),
                                    ("limits", "cpu", c.cpu_limit), ("limits", "memory", c.memory_limit)):
            if value:
                resources.setdefault(section, {})[key] = value
        labels = {POOL_LABEL: self.pool_id, TASK_LABEL: batch.jobs[0].task_id.removeprefix("task_")[:63],
                  "app.kubernetes.io/managed-by": "mahavishnu"}
        spec: dict[str, Any] = {
            "backoffLimit": max(j.retries for j in batch.jobs),
            "activeDeadlineSeconds": int(max(j.timeout for j in batch.jobs) + 0.999),
            "ttlSecondsAfterFinished": self._ttl,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [{
                    "name": "task", "image": c.container_image, "command": ["python", "-c", RUNNER],
                    "env": env, "resources": resources}]},
            },
        }
        if len(batch.jobs) > 1:
            spec.update({"completionMode": "Indexed", "completions": len(batch.jobs),
                         "parallelism": min(len(batch.jobs), c.max_workers)})
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": batch.name, "namespace": c.namespace, "labels": labels}, "spec": spec}

    # -- watching Jobs ------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._poll)
            if self._warm is not None and not self._error:
                with contextlib.suppress(PoolUnavailable):
                    await self._follow_replicas()
                continue
            if self._error:
                with contextlib.suppress(PoolUnavailable):
                    await self.verify()
                    self._error = None
                    self._schedule_dispatch()
                continue
            for batch in list(self._batches.values()):
                try:
                    await self._check(batch)
                except PoolUnavailable as exc:
                    self._error = exc.message
                    break
            with contextlib.suppress(PoolUnavailable):
                await self._refresh_workers()
            if self._queue:
                self._schedule_dispatch()

    async def _check(self, batch: _Batch) -> None:
        ns = self.config.namespace
        job = await self._call(f"reading Job {batch.name}", self._batch_api.read_namespaced_job, batch.name, ns)
        pods = await self._call(f"listing the Pods of Job {batch.name}", self._core.list_namespaced_pod, ns,
                                label_selector=f"job-name={batch.name}")
        for pod in pods.items or []:
            index = self._index(pod)
            if index is None or index in batch.done:
                continue
            phase = pod.status.phase if pod.status else None
            waiting = self._waiting(pod)
            if waiting and waiting[0] in IMAGE_ERRORS:
                self._end(batch, index, TaskState.FAILED, None,
                          f"image {self.config.container_image!r} cannot be pulled: {waiting[0]} {waiting[1]}".strip(),
                          fault=True)
            elif phase in ("Succeeded", "Failed"):
                await self._collect(batch, index, pod, phase)
            elif phase == "Pending" and time.monotonic() - batch.created > self._pending_timeout:
                why = self._unschedulable(pod) or "its pod stayed Pending"
                self._end(batch, index, TaskState.FAILED, None,
                          f"the Job never started within {self._pending_timeout:g}s: {why}", fault=True)
        # Pods first (their logs say what failed), then what the Job as a whole says.
        conditions = {c.type: c for c in (job.status.conditions or [])} if job.status else {}
        failed = conditions.get("Failed")
        if failed is not None and failed.status == "True":
            state = TaskState.TIMED_OUT if failed.reason == "DeadlineExceeded" else TaskState.FAILED
            for i in batch.unfinished():
                timeout = batch.jobs[i].timeout
                self._end(batch, i, state, None, f"timed out after {timeout:g}s (the Job's activeDeadlineSeconds); "
                          "its pods were stopped" if state is TaskState.TIMED_OUT else
                          f"the Job failed: {failed.reason}: {failed.message}")
        if not (pods.items or []) and time.monotonic() - batch.created > self._pending_timeout:
            for i in batch.unfinished():
                self._end(batch, i, TaskState.FAILED, None,
                          f"the Job created no pod within {self._pending_timeout:g}s", fault=True)
        if not batch.unfinished():
            self._batches.pop(batch.name, None)
            for job_ in batch.jobs:
                self._owner.pop(job_.task_id, None)
            if batch.deleting:
                await self._delete(batch)
            self._schedule_dispatch()

    async def _collect(self, batch: _Batch, index: int, pod: Any, phase: str) -> None:
        log = await self._call(f"reading the log of {pod.metadata.name}", self._core.read_namespaced_pod_log,
                               pod.metadata.name, self.config.namespace)
        result = None
        for line in reversed(str(log).splitlines()):
            if line.startswith(MARKER):
                try:
                    result = json.loads(line[len(MARKER):])
                except ValueError:
                    result = None
                break
        if isinstance(result, dict) and result.get("ok"):
            self._end(batch, index, TaskState.COMPLETED, result.get("result"), None)
            return
        retries = batch.jobs[index].retries
        batch.failures[index] = batch.failures.get(index, 0) + 1
        if batch.failures[index] <= retries:
            return  # Kubernetes starts another pod (backoffLimit)
        error = (result or {}).get("error") if isinstance(result, dict) else None
        job = batch.jobs[index]
        if error is None and time.monotonic() - batch.created >= job.timeout:
            # Killed at the deadline before the Job's condition said so.
            self._end(batch, index, TaskState.TIMED_OUT, None, f"timed out after {job.timeout:g}s (the Job's "
                      "activeDeadlineSeconds); its pods were stopped")
            return
        self._end(batch, index, TaskState.FAILED, None,
                  error or f"pod {pod.metadata.name} {phase.lower()} without a result line; log tail: "
                           f"{str(log)[-500:]}")

    def _end(self, batch: _Batch, index: int, state: TaskState, result: Any, error: str | None,
             fault: bool = False) -> None:
        if index in batch.done:
            return
        batch.done.add(index)
        if fault:
            batch.deleting = True
        self.sink.task_finished(batch.jobs[index].task_id, state, result, error, f"{self.config.name}/{batch.name}",
                                pool_fault=fault)

    async def _delete(self, batch: _Batch) -> None:
        await self._call(f"deleting Job {batch.name}", self._batch_api.delete_namespaced_job, batch.name,
                         self.config.namespace, body={"propagationPolicy": "Foreground"})

    @staticmethod
    def _index(pod: Any) -> int | None:
        meta = pod.metadata
        raw = (meta.annotations or {}).get(INDEX_KEY) or (meta.labels or {}).get(INDEX_KEY) or "0"
        try:
            return int(raw)
        except ValueError:
            return None

    @staticmethod
    def _waiting(pod: Any) -> tuple[str, str] | None:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason:
                return waiting.reason, waiting.message or ""
        return None

    @staticmethod
    def _unschedulable(pod: Any) -> str | None:
        for cond in (pod.status.conditions or []) if pod.status else []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return f"{cond.reason}: {cond.message}"
        return None

    async def _refresh_workers(self) -> None:
        pods = await self._call("listing the pool's Pods", self._core.list_namespaced_pod, self.config.namespace,
                                label_selector=f"{POOL_LABEL}={self.pool_id}")
        self._running_pods = [
            WorkerInfo(worker_id=p.metadata.name, state="busy") for p in pods.items or []
            if p.status and p.status.phase == "Running"]

    # -- scaling and reporting ----------------------------------------------------------
    async def scale(self, target: int, trigger: str = "manual") -> int:
        """How many task pods may run at once (Job parallelism is capped by it)."""
        if not self.config.min_workers <= target <= self.config.max_workers:
            raise InvalidInput(f"target must be within {self.config.min_workers}-{self.config.max_workers}",
                               field="target")
        before, self._limit = self._limit, target
        if target != before:
            self.sink.pool_event(self.pool_id, "pool_scaled", {"direction": "up" if target > before else "down",
                                                               "trigger": trigger, "from": before, "to": target})
        self._schedule_dispatch()
        return target

    def snapshot(self) -> BackendSnapshot:
        if self._warm is not None and not self._error:
            return self._warm.snapshot()  # type: ignore[no-any-return]
        if self._closed:
            status, reason = PoolStatus.STOPPED, "closed"
        elif self._error:
            status, reason = PoolStatus.FAILED, self._error
        else:
            status, reason = PoolStatus.RUNNING, None
        return BackendSnapshot(status=status, status_reason=reason, workers=list(self._running_pods),
                               queue_size=len(self._queue), in_flight=self._in_flight())

