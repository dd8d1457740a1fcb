"""A loopback Kubernetes API server owned by the tests: the real REST paths and object shapes
for namespaces, Jobs (Indexed ones too), Pods, pod logs and ConfigMaps, label selectors, and a
controller that runs each Job's container command as a local process, so results are real.

Its failure switches mirror a real cluster: a `token` it demands (401), namespaces it forbids
(403), images it cannot pull (names containing "does-not-exist": ErrImagePull), pods it cannot
schedule (cpu requests above `node_cpu`), and activeDeadlineSeconds (DeadlineExceeded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "code": code}, status_code=code)


def cpu(value: str | None) -> float:
    if not value:
        return 0.0
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube:
    def __init__(self, token: str | None = None, forbidden: tuple[str, ...] = (), node_cpu: float = 64.0) -> None:
        self.token = token
        self.forbidden = set(forbidden)
        self.node_cpu = node_cpu
        self.namespaces: dict[str, dict[str, Any]] = {"default": self._meta_obj("Namespace", "v1", "default", None)}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.procs: dict[tuple[str, str], subprocess.Popen[str]] = {}
        # apps/v1 Deployments, v1 Services and Secrets, autoscaling/v2 HPAs, by (kind, namespace, name)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self.url = ""

    # -- objects ------------------------------------------------------------------------
    @staticmethod
    def _meta_obj(kind: str, api: str, name: str, namespace: str | None, labels: dict[str, str] | None = None,
                  **extra: Any) -> dict[str, Any]:
        meta = {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": str(time.monotonic_ns()),
                "creationTimestamp": now(), "labels": labels or {}}
        if namespace:
            meta["namespace"] = namespace
        return {"kind": kind, "apiVersion": api, "metadata": meta, **extra}

    # -- HTTP ---------------------------------------------------------------------------
    def app(self) -> Starlette:
        ns = "/api/v1/namespaces"
        jobs = "/apis/batch/v1/namespaces/{ns}/jobs"
        return Starlette(routes=[
            Route("/version", lambda r: JSONResponse({"major": "1", "minor": "31", "gitVersion": "v1.31.0-loopback"})),
            Route(ns, self.namespaces_view, methods=["GET", "POST"]),
            Route(ns + "/{name}", self.namespace_view, methods=["GET"]),
            Route(jobs, self.jobs_view, methods=["GET", "POST"]),
            Route(jobs + "/{name}", self.job_view, methods=["GET", "DELETE"]),
            Route(ns + "/{ns}/pods", self.pods_view, methods=["GET"]),
            Route(ns + "/{ns}/pods/{name}", self.pod_view, methods=["GET"]),
            Route(ns + "/{ns}/pods/{name}/log", self.log_view, methods=["GET"]),
            Route(ns + "/{ns}/configmaps", self.configmaps_view, methods=["GET", "POST"]),
            *[Route(prefix + "/namespaces/{ns}/" + plural, self.objects_view(kind, api), methods=["GET", "POST"])
              for kind, api, prefix, plural in self.KINDS],
            *[Route(prefix + "/namespaces/{ns}/" + plural + "/{name}", self.object_view(kind),
                    methods=["GET", "DELETE"]) for kind, api, prefix, plural in self.KINDS],
            Route(ns + "/{ns}/configmaps/{name}", self.configmap_view, methods=["GET", "DELETE"]),
        ])

    KINDS = (("Deployment", "apps/v1", "/apis/apps/v1", "deployments"),
             ("Service", "v1", "/api/v1", "services"),
             ("Secret", "v1", "/api/v1", "secrets"),
             ("HorizontalPodAutoscaler", "autoscaling/v2", "/apis/autoscaling/v2", "horizontalpodautoscalers"))

    def objects_view(self, kind: str, api: str) -> Any:
        async def view(request: Request) -> Response:
            namespace = request.path_params["ns"]
            denied = self.guard(request, namespace)
            if denied:
                return denied
            if request.method == "GET":
                items = [o for (k, n, _), o in self.objects.items() if k == kind and n == namespace]
                return JSONResponse({"kind": f"{kind}List", "apiVersion": api, "metadata": {}, "items": items})
            body = await request.json()
            name = body["metadata"]["name"]
            if (kind, namespace, name) in self.objects:
                return status(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
            extra = {k: v for k, v in body.items() if k not in ("kind", "apiVersion", "metadata")}
            obj = self._meta_obj(kind, api, name, namespace, body["metadata"].get("labels"), **extra)
            if kind == "Secret" and "stringData" in obj:  # stored, and read back, base64-encoded
                import base64

                obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()}
            if kind == "Service":  # the cluster assigns the address; here, loopback
                obj["spec"]["clusterIP"] = "127.0.0.1"
            self.objects[(kind, namespace, name)] = obj
            if kind == "Deployment":
                obj["status"] = {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0}
                threading.Thread(target=self.run_deployment, args=(namespace, name), daemon=True).start()
            return JSONResponse(obj, status_code=201)
        return view

    def object_view(self, kind: str) -> Any:
        async def view(request: Request) -> Response:
            namespace, name = request.path_params["ns"], request.path_params["name"]
            denied = self.guard(request, namespace)
            if denied:
                return denied
            key = (kind, namespace, name)
            if key not in self.objects:
                return status(404, "NotFound", f'{kind.lower()}s "{name}" not found')
            if request.method == "GET":
                return JSONResponse(self.objects[key])
            del self.objects[key]
            if kind == "Deployment":
                for pod_key, pod in list(self.pods.items()):
                    if pod["metadata"]["labels"].get("mahavishnu.io/deployment") == name:
                        self.kill(pod_key)
                        del self.pods[pod_key]
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        return view

    def run_deployment(self, namespace: str, name: str) -> None:
        """Start the replicas as local processes; ready once the container answers /health."""
        import urllib.request

        deployment = self.objects[("Deployment", namespace, name)]
        template = deployment["spec"]["template"]
        container = template["spec"]["containers"][0]
        port = container["ports"][0]["containerPort"]
        for _ in range(deployment["spec"].get("replicas", 1)):
            pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
            labels = {**template["metadata"].get("labels", {}), "mahavishnu.io/deployment": name}
            pod = self._meta_obj("Pod", "v1", pod_name, namespace, labels, spec=template["spec"],
                                 status={"phase": "Running", "startTime": now()})
            key = (namespace, pod_name)
            env = {**os.environ, **{e["name"]: self.env_value(namespace, e) for e in container.get("env", [])}}
            proc = subprocess.Popen(container["command"] + container.get("args", []), env=env, text=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            with self.lock:
                self.pods[key] = pod
                self.procs[key] = proc
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ("Deployment", namespace, name) in self.objects:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        with self.lock:
            n = deployment["spec"].get("replicas", 1)
            deployment["status"] = {"replicas": n, "readyReplicas": n, "availableReplicas": n}

    def env_value(self, namespace: str, entry: dict[str, Any]) -> str:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            import base64

            secret = self.objects.get(("Secret", namespace, ref["name"]), {})
            data = secret.get("data") or {}
            if ref["key"] in data:
                return base64.b64decode(data[ref["key"]]).decode()
            return str((secret.get("stringData") or {}).get(ref["key"], ""))
        return str(entry.get("value", ""))

    def guard(self, request: Request, namespace: str | None) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        if namespace in self.forbidden:
            return status(403, "Forbidden", f'namespaces "{namespace}" is forbidden: User cannot access it')
        return None

    async def namespaces_view(self, request: Request) -> Response:
        if request.method == "GET":
            return self.guard(request, None) or JSONResponse(
                {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": list(self.namespaces.values())})
        body = await request.json()
        name = body["metadata"]["name"]
        denied = self.guard(request, name)
        if denied:
            return denied
        with self.lock:
            if name in self.namespaces:
                return status(409, "AlreadyExists", f'namespaces "{name}" already exists')
            self.namespaces[name] = self._meta_obj("Namespace", "v1", name, None, status={"phase": "Active"})
            return JSONResponse(self.namespaces[name], status_code=201)

    async def namespace_view(self, request: Request) -> Response:
        name = request.path_params["name"]
        denied = self.guard(request, name)
        if denied:
            return denied
        obj = self.namespaces.get(name)
        return JSONResponse(obj) if obj else status(404, "NotFound", f'namespaces "{name}" not found')

    def _listing(self, kind: str, api: str, store: dict[tuple[str, str], dict[str, Any]], namespace: str,
                 selector: str | None) -> JSONResponse:
        with self.lock:
            items = [o for (n, _), o in store.items() if n == namespace and matches(o["metadata"]["labels"], selector)]
            return JSONResponse({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": "1"},
                                 "items": json.loads(json.dumps(items))})

    async def jobs_view(self, request: Request) -> Response:
        namespace = request.path_params["ns"]
        denied = self.guard(request, namespace)
        if denied:
            return denied
        if namespace not in self.namespaces:
            return status(404, "NotFound", f'namespaces "{namespace}" not found')
        if request.method == "GET":
            return self._listing("JobList", "batch/v1", self.jobs, namespace, request.query_params.get("labelSelector"))
        body = await request.json()
        name = body["metadata"]["name"]
        with self.lock:
            if (namespace, name) in self.jobs:
                return status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            job = self._meta_obj("Job", "batch/v1", name, namespace, body["metadata"].get("labels"),
                                 spec=body["spec"], status={"active": 0, "succeeded": 0, "failed": 0,
                                                            "startTime": now()})
            self.jobs[(namespace, name)] = job
        threading.Thread(target=self.run_job, args=(namespace, name), daemon=True).start()
        return JSONResponse(job, status_code=201)

    async def job_view(self, request: Request) -> Response:
        namespace, name = request.path_params["ns"], request.path_params["name"]
        denied = self.guard(request, namespace)
        if denied:
            return denied
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                return status(404, "NotFound", f'jobs.batch "{name}" not found')
            if request.method == "GET":
                return JSONResponse(json.loads(json.dumps(job)))
            body = json.loads(await request.body() or b"{}")
            job["metadata"]["deletionPropagation"] = body.get("propagationPolicy")
            del self.jobs[(namespace, name)]
            for key, pod in list(self.pods.items()):
                if pod["metadata"]["labels"].get("job-name") == name:
                    self.kill(key)
                    del self.pods[key]
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    async def pods_view(self, request: Request) -> Response:
        namespace = request.path_params["ns"]
        return self.guard(request, namespace) or self._listing(
            "PodList", "v1", self.pods, namespace, request.query_params.get("labelSelector"))

    async def pod_view(self, request: Request) -> Response:
        key = (request.path_params["ns"], request.path_params["name"])
        denied = self.guard(request, key[0])
        if denied:
            return denied
        pod = self.pods.get(key)
        return JSONResponse(pod) if pod else status(404, "NotFound", f'pods "{key[1]}" not found')

    async def log_view(self, request: Request) -> Response:
        key = (request.path_params["ns"], request.path_params["name"])
        denied = self.guard(request, key[0])
        if denied:
            return denied
        if key not in self.pods:
            return status(404, "NotFound", f'pods "{key[1]}" not found')
        return PlainTextResponse(self.logs.get(key, ""))

    async def configmaps_view(self, request: Request) -> Response:
        namespace = request.path_params["ns"]
        denied = self.guard(request, namespace)
        if denied:
            return denied
        if request.method == "GET":
            return self._listing("ConfigMapList", "v1", self.configmaps, namespace,
                                 request.query_params.get("labelSelector"))
        body = await request.json()
        obj = self._meta_obj("ConfigMap", "v1", body["metadata"]["name"], namespace, body["metadata"].get("labels"),
                             data=body.get("data", {}))
        self.configmaps[(namespace, body["metadata"]["name"])] = obj
        return JSONResponse(obj, status_code=201)

    async def configmap_view(self, request: Request) -> Response:
        key = (request.path_params["ns"], request.path_params["name"])
        denied = self.guard(request, key[0])
        if denied:
            return denied
        obj = self.configmaps.pop(key, None) if request.method == "DELETE" else self.configmaps.get(key)
        return JSONResponse(obj) if obj else status(404, "NotFound", f'configmaps "{key[1]}" not found')

    # -- the controller -----------------------------------------------------------------
    def run_job(self, namespace: str, name: str) -> None:
        job = self.jobs[(namespace, name)]
        spec = job["spec"]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions", 1)
        parallelism = spec.get("parallelism", 1)
        backoff = spec.get("backoffLimit", 6)
        deadline = time.monotonic() + spec.get("activeDeadlineSeconds", 10**6)
        pending = list(range(completions))
        running: dict[int, tuple[str, str]] = {}
        failures = 0
        while (namespace, name) in self.jobs:
            if time.monotonic() > deadline:
                return self.fail_job(namespace, name, "DeadlineExceeded", "Job was active longer than specified "
                                     "deadline", running)
            while pending and len(running) < parallelism:
                index = pending.pop(0)
                running[index] = (namespace, self.start_pod(job, index, indexed))
            for index, key in list(running.items()):
                pod = self.pods.get(key)
                if pod is None:
                    return None
                if pod["status"]["phase"] == "Succeeded":
                    del running[index]
                    with self.lock:
                        job["status"]["succeeded"] += 1
                elif pod["status"]["phase"] == "Failed":
                    del running[index]
                    failures += 1
                    with self.lock:
                        job["status"]["failed"] += 1
                    if failures > backoff:
                        return self.fail_job(namespace, name, "BackoffLimitExceeded",
                                             "Job has reached the specified backoff limit", running)
                    pending.append(index)
            with self.lock:
                job["status"]["active"] = len(running)
                if job["status"]["succeeded"] >= completions:
                    job["status"]["conditions"] = [{"type": "Complete", "status": "True",
                                                    "lastTransitionTime": now()}]
                    job["status"]["completionTime"] = now()
                    return None
            time.sleep(0.05)
        return None

    def fail_job(self, namespace: str, name: str, reason: str, message: str,
                 running: dict[int, tuple[str, str]]) -> None:
        for key in running.values():
            self.kill(key)
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job:
                job["status"]["active"] = 0
                job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": reason,
                                                "message": message, "lastTransitionTime": now()}]

    def start_pod(self, job: dict[str, Any], index: int, indexed: bool) -> str:
        namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        pod_name = f"{job_name}-{index}-{uuid.uuid4().hex[:5]}" if indexed else f"{job_name}-{uuid.uuid4().hex[:5]}"
        labels = {**template["metadata"].get("labels", {}), "job-name": job_name}
        annotations = {INDEX_KEY: str(index)} if indexed else {}
        pod = self._meta_obj("Pod", "v1", pod_name, namespace, labels, spec=template["spec"],
                             status={"phase": "Pending", "conditions": [], "containerStatuses": []})
        pod["metadata"]["annotations"] = annotations
        key = (namespace, pod_name)
        with self.lock:
            self.pods[key] = pod
        image = container["image"]
        requested = cpu(container.get("resources", {}).get("requests", {}).get("cpu"))
        if "does-not-exist" in image:
            pod["status"]["containerStatuses"] = [{
                "name": container["name"], "image": image, "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull",
                                      "message": f'failed to pull image "{image}": not found'}}}]
            return pod_name
        if requested > self.node_cpu:
            pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": "0/1 nodes are available: 1 Insufficient cpu."}]
            return pod_name
        env = {**os.environ, **{e["name"]: e.get("value", "") for e in container.get("env", [])}}
        if indexed:
            env["JOB_COMPLETION_INDEX"] = str(index)
        proc = subprocess.Popen(container["command"] + container.get("args", []), env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[key] = proc
        with self.lock:
            pod["status"].update({"phase": "Running", "startTime": now(), "containerStatuses": [{
                "name": container["name"], "image": image, "imageID": f"docker-pullable://{image}", "ready": True,
                "restartCount": 0, "state": {"running": {"startedAt": now()}}}]})
        threading.Thread(target=self.follow, args=(key, proc, container, image), daemon=True).start()
        return pod_name

    def follow(self, key: tuple[str, str], proc: subprocess.Popen[str], container: dict[str, Any],
               image: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.logs[key] = self.logs.get(key, "") + line
        code = proc.wait()
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return
            pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            pod["status"]["containerStatuses"] = [{
                "name": container["name"], "image": image, "imageID": f"docker-pullable://{image}", "ready": False,
                "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0
                                                            else "Error", "finishedAt": now()}}}]

    def kill(self, key: tuple[str, str]) -> None:
        proc = self.procs.pop(key, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    def running_processes(self) -> int:
        return sum(1 for p in self.procs.values() if p.poll() is None)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> str:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback Kubernetes API did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        for key in list(self.procs):
            self.kill(key)
        if self._server is not None:
            self._server.should_exit = True
