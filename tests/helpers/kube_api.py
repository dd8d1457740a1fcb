"""A loopback Kubernetes API server owned by the tests, faithful where our backend's bugs hid.

The real REST paths and object shapes for namespaces, Jobs, Pods (and their logs), Secrets,
ConfigMaps, Events, Deployments, Services and HPAs; list with label and field selectors; watch
with resourceVersion, bookmarks and 410 Gone after `compact()`; create, delete (with
propagationPolicy: Foreground, Background, Orphan; garbage collection by ownerReferences),
merge patch and server-side apply. What a real cluster does and this server does too:

- errors are Status objects whose `message` says what is wrong; a list in a missing namespace
  is 200 and empty; an object over 1.5 MiB is refused by "etcd" (500, request is too large); a
  Secret over 1 MiB is invalid (422);
- a Job controller: pods with ownerReferences and job-name labels; a failed pod counted once in
  `status.failed`, the next one started after an exponential backoff; `podFailurePolicy` on
  DisruptionTarget; conditions `SuccessCriteriaMet` then `Complete`, `FailureTarget` then
  `Failed`, with reasons; `startTime` at one-second precision and activeDeadlineSeconds counted
  from it; `ttlSecondsAfterFinished` deletes the Job (then it reads 404);
- a kubelet: each container runs as a local process; env values get `$(VAR)` expansion and `$$`
  escaping; an env var over 128 KiB cannot be exec'd (E2BIG: StartError); Secret volumes and
  emptyDirs are directories, their mountPaths rewritten in env values and argv; the termination
  message file becomes `terminated.message` (FallbackToLogsOnError: the log's tail on failure);
  a missing Secret keeps the pod ContainerCreating; deletion sends SIGTERM, then SIGKILL after the grace period;
- admission: a bearer `token` (401), RBAC rules per token (403 with the API's message),
  forbidden namespaces (403), Pod Security `restricted` in namespaces labelled for it (the Job
  controller's pod create is refused and an Event says why);
- `pod_quota[namespace]`: a ResourceQuota on pods (the Job controller's create is refused, an
  Event says why);
- images: names containing "does-not-exist" cannot be pulled (ErrImagePull), "no-python" have
  no `python` (StartError); a cpu request above `node_cpu` is Unschedulable;
- switches for trouble: `throttle(n)` (429 with Retry-After), `fail_next(n, code)` (5xx),
  `compact()` (watchers get 410), `disrupt(pod)` (an eviction: DisruptionTarget).
- a Deployment controller: each replica a local process on its own free port, each Service a
  TCP proxy on a loopback address of its own.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.helpers.ports import free_port

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
MAX_OBJECT = 1536 * 1024  # etcd's request limit, as the API server meets it
MAX_SECRET = 1 << 20
MAX_ARG = 128 * 1024  # MAX_ARG_STRLEN: one "NAME=value" string passed to exec
RESTRICTED = "pod-security.kubernetes.io/enforce"

# (path prefix, plural) -> (kind, apiVersion, API group for RBAC, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, str, bool]] = {
    ("/api/v1", "namespaces"): ("Namespace", "v1", "", False),
    ("/api/v1", "pods"): ("Pod", "v1", "", True),
    ("/api/v1", "secrets"): ("Secret", "v1", "", True),
    ("/api/v1", "configmaps"): ("ConfigMap", "v1", "", True),
    ("/api/v1", "events"): ("Event", "v1", "", True),
    ("/api/v1", "services"): ("Service", "v1", "", True),
    ("/apis/batch/v1", "jobs"): ("Job", "batch/v1", "batch", True),
    ("/apis/apps/v1", "deployments"): ("Deployment", "apps/v1", "apps", True),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers"): ("HorizontalPodAutoscaler", "autoscaling/v2",
                                                            "autoscaling", True),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # the API's precision: whole seconds


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=code, headers=headers)


def cpu(value: str | None) -> float:
    if not value:
        return 0.0
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key) == value:
                return False
            continue
        key, _, value = term.partition("=")
        if labels.get(key) != value.lstrip("="):
            return False
    return True


def field_matches(obj: dict[str, Any], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        path, _, value = term.partition("=")
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if str(node) != value:
            return False
    return True


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of env values, command and args: $(VAR) from earlier variables,
    $$ escapes a dollar, an unknown $(VAR) stays as it is."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, value)


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard refuses in a pod spec."""
    pod_sc = spec.get("securityContext") or {}
    out: list[str] = []
    for c in spec.get("containers", []):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f'allowPrivilegeEscalation != false (container "{name}" must set '
                       'securityContext.allowPrivilegeEscalation=false)')
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f'unrestricted capabilities (container "{name}" must set securityContext.capabilities.drop='
                       '["ALL"])')
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            out.append(f'runAsNonRoot != true (pod or container "{name}" must set securityContext.runAsNonRoot=true)')
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f'seccompProfile (pod or container "{name}" must set securityContext.seccompProfile.type to '
                       '"RuntimeDefault" or "Localhost")')
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            out.append(f'restricted volume types (volume "{volume["name"]}" uses restricted volume type "hostPath")')
    return out


class FakeKube:
    def __init__(self, token: str | None = None, forbidden: tuple[str, ...] = (), node_cpu: float = 64.0,
                 backoff_base: float = 0.2, bookmark_every: float = 0.5,
                 rules: dict[str, tuple[str, list[dict[str, Any]]]] | None = None) -> None:
        """`rules`: tokens of namespaced users, each with (the namespace of its RoleBinding, the
        rules of its Role); `token` is a cluster admin's."""
        self.token = token
        self.forbidden = set(forbidden)
        self.node_cpu = node_cpu
        self.backoff_base = backoff_base
        self.bookmark_every = bookmark_every
        self.rules = rules or {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name) -> object
        self.history: list[tuple[int, str, str, str, dict[str, Any]]] = []  # (rv, plural, ns, type, object)
        self.compacted = 0  # watches from an older resourceVersion get 410 Gone
        self.rv = 0
        self.logs: dict[tuple[str, str], str] = {}
        self.procs: dict[tuple[str, str], subprocess.Popen[str]] = {}
        self.dirs: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._throttle = 0
        self._fail: list[int] = []
        self._server: uvicorn.Server | None = None
        self._proxies: dict[tuple[str, str], socket.socket] = {}
        self._replica_ports: dict[tuple[str, str], list[int]] = {}
        self._stopping = False
        self.bookmarks = 0
        self.pod_quota: dict[str, int] = {}  # namespace -> most pods a ResourceQuota allows
        self._paused = False
        self.url = ""
        self.add_namespace("default")

    # -- switches and admin actions (what `kubectl` or the cluster would do) ---------------------
    def throttle(self, n: int) -> None:
        """The next n requests get 429 Too Many Requests with Retry-After: 1."""
        self._throttle = n

    def fail_next(self, n: int, code: int = 503) -> None:
        self._fail = [code] * n

    def compact(self) -> None:
        """etcd compaction: every resourceVersion so far is gone; watchers must list again."""
        with self.lock:
            self.compacted = self.rv
            self.history.clear()

    def add_namespace(self, name: str, restricted: bool = False) -> None:
        labels = {"kubernetes.io/metadata.name": name, **({RESTRICTED: "restricted"} if restricted else {})}
        self.put("namespaces", "", self.new("namespaces", name, "", labels, status={"phase": "Active"}))

    def delete_job(self, namespace: str, name: str, policy: str = "Background") -> None:
        """`kubectl delete job` (Background is kubectl's default)."""
        self.remove("jobs", namespace, name, policy)

    def disrupt(self, namespace: str, pod_name: str) -> None:
        """An eviction: the pod gets DisruptionTarget, then its container is stopped."""
        with self.lock:
            pod = self.objects.get(("pods", namespace, pod_name))
            if pod is None:
                return
            pod["status"].setdefault("conditions", []).append({
                "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting", "lastTransitionTime": now()})
            self.touch("pods", pod)
        self.kill((namespace, pod_name), signal.SIGTERM)

    def jobs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (p, n, _), o in list(self.objects.items()) if p == "jobs" and namespace in (None, n)]

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (p, n, _), o in list(self.objects.items()) if p == "pods" and namespace in (None, n)]

    def of_kind(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (p, n, _), o in list(self.objects.items()) if p == plural and namespace in (None, n)]

    def running_processes(self) -> int:
        return sum(1 for p in list(self.procs.values()) if p.poll() is None)

    # -- the store ------------------------------------------------------------------------------
    def new(self, plural: str, name: str, namespace: str, labels: dict[str, str] | None = None,
            **extra: Any) -> dict[str, Any]:
        kind, api, _, _ = next(v for (_, p), v in RESOURCES.items() if p == plural)
        meta: dict[str, Any] = {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                                "labels": dict(labels or {}), "generation": 1}
        if namespace:
            meta["namespace"] = namespace
        return {"kind": kind, "apiVersion": api, "metadata": meta, **extra}

    def _record(self, plural: str, obj: dict[str, Any], kind: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, plural, obj["metadata"].get("namespace", ""), kind, copy.deepcopy(obj)))

    def put(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            key = (plural, namespace, obj["metadata"]["name"])
            kind = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = obj
            self._record(plural, obj, kind)
            return obj

    def touch(self, plural: str, obj: dict[str, Any]) -> None:
        with self.lock:
            key = (plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if self.objects.get(key) is obj:
                self._record(plural, obj, "MODIFIED")

    def remove(self, plural: str, namespace: str, name: str, policy: str = "Background") -> dict[str, Any] | None:
        """Delete with a propagation policy: Foreground removes dependents first (the object shows a
        deletionTimestamp meanwhile), Background after, Orphan leaves them."""
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                return None
            if policy == "Foreground":
                obj["metadata"]["deletionTimestamp"] = now()
                obj["metadata"]["finalizers"] = ["foregroundDeletion"]
                self.touch(plural, obj)
        if policy == "Foreground":
            self._delete_dependents(obj["metadata"]["uid"], namespace)
        with self.lock:
            if self.objects.get((plural, namespace, name)) is obj:
                del self.objects[(plural, namespace, name)]
                self._record(plural, obj, "DELETED")
        if plural == "pods":
            self.kill((namespace, name))
        if plural == "deployments":
            for pod in self.pods(namespace):
                if pod["metadata"]["labels"].get("mahavishnu.test/deployment") == name:
                    self.remove("pods", namespace, pod["metadata"]["name"])
        if plural == "services":
            self._close_proxy(namespace, name)
        if plural != "pods" and policy == "Background":
            self._delete_dependents(obj["metadata"]["uid"], namespace)
        return obj

    def _delete_dependents(self, uid: str, namespace: str) -> None:
        for (plural, ns, name), obj in list(self.objects.items()):
            if ns == namespace and any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                self.remove(plural, ns, name)

    # -- HTTP -----------------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes = [Route("/version", lambda r: JSONResponse({"major": "1", "minor": "33",
                                                             "gitVersion": "v1.33.0-loopback"}))]
        routes.append(Route("/api/v1/namespaces/{name}", self.namespace_view, methods=["GET", "DELETE"]))
        for prefix in sorted({p for p, _ in RESOURCES}):
            routes += [
                Route(prefix + "/namespaces", self.cluster_view(prefix), methods=["GET", "POST"]),
                Route(prefix + "/namespaces/{ns}/pods/{name}/log", self.log_view, methods=["GET"]),
                Route(prefix + "/namespaces/{ns}/{plural}", self.collection_view(prefix), methods=["GET", "POST"]),
                Route(prefix + "/namespaces/{ns}/{plural}/{name}", self.item_view(prefix),
                      methods=["GET", "DELETE", "PATCH", "PUT"]),
            ]
        return Starlette(routes=routes)

    def guard(self, request: Request, namespace: str, plural: str, verb: str, group: str) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if self._throttle > 0:
            self._throttle -= 1
            return status(429, "TooManyRequests", "The API server is handling too many requests; try again later "
                          "(API Priority and Fairness)", {"retryAfterSeconds": 1}, headers={"Retry-After": "1"})
        if self._fail:
            code = self._fail.pop(0)
            return status(code, "ServiceUnavailable" if code == 503 else "InternalError",
                          "the server is currently unable to handle the request")
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if self.token and token != self.token and token not in self.rules:
            return status(401, "Unauthorized", "Unauthorized")
        resource = f"{plural}/log" if request.url.path.endswith("/log") else plural
        if token in self.rules:
            bound, rules = self.rules[token]
            allowed = namespace == bound and plural != "namespaces" and any(
                group in r.get("apiGroups", []) and resource in r.get("resources", []) and
                (verb in r.get("verbs", []) or "*" in r.get("verbs", [])) for r in rules)
            if not allowed:
                where = f' in the namespace "{namespace}"' if namespace and plural != "namespaces" else \
                    " at the cluster scope"
                kind = f"{resource}.{group}" if group else resource
                return status(403, "Forbidden", f'{kind} is forbidden: User "system:serviceaccount:{namespace or "x"}'
                              f':mahavishnu" cannot {verb} resource "{resource}" in API group "{group}"{where}',
                              {"kind": plural})
        if namespace in self.forbidden:
            return status(403, "Forbidden", f'namespaces "{namespace}" is forbidden: User cannot access it')
        return None

    def cluster_view(self, prefix: str) -> Any:
        """/api/v1/namespaces: list, watch, create."""
        async def view(request: Request) -> Response:
            if request.method == "GET":
                verb = "watch" if request.query_params.get("watch") in ("true", "1") else "list"
                return self.guard(request, "", "namespaces", verb, "") or await self.list_or_watch(
                    request, "namespaces", "")
            body = await request.json()
            name = body["metadata"]["name"]
            denied = self.guard(request, name, "namespaces", "create", "")
            if denied:
                return denied
            if ("namespaces", "", name) in self.objects:
                return status(409, "AlreadyExists", f'namespaces "{name}" already exists')
            obj = self.new("namespaces", name, "", {**body["metadata"].get("labels", {}),
                                                    "kubernetes.io/metadata.name": name}, status={"phase": "Active"})
            return JSONResponse(self.put("namespaces", "", obj), status_code=201)
        return view

    async def namespace_view(self, request: Request) -> Response:
        name = request.path_params["name"]
        denied = self.guard(request, name, "namespaces", "get" if request.method == "GET" else "delete", "")
        if denied:
            return denied
        obj = self.objects.get(("namespaces", "", name))
        if obj is None:
            return status(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})
        if request.method == "DELETE":
            for key in [k for k in self.objects if k[1] == name]:
                self.remove(key[0], name, key[2])
            self.remove("namespaces", "", name)
        return JSONResponse(copy.deepcopy(obj))

    def resource(self, prefix: str, plural: str) -> tuple[str, str, str, bool] | None:
        return RESOURCES.get((prefix, plural))

    def collection_view(self, prefix: str) -> Any:
        async def view(request: Request) -> Response:
            namespace, plural = request.path_params["ns"], request.path_params["plural"]
            info = self.resource(prefix, plural)
            if info is None:
                return status(404, "NotFound", "the server could not find the requested resource")
            if request.method == "GET":
                verb = "watch" if request.query_params.get("watch") in ("true", "1") else "list"
                return self.guard(request, namespace, plural, verb, info[2]) or \
                    await self.list_or_watch(request, plural, namespace)
            denied = self.guard(request, namespace, plural, "create", info[2])
            if denied:
                return denied
            raw = await request.body()
            return self.create(plural, namespace, raw)
        return view

    def create(self, plural: str, namespace: str, raw: bytes) -> Response:
        body = json.loads(raw)
        name = body["metadata"].get("name")
        if plural == "configmaps" and sum(len(v.encode()) for v in (body.get("data") or {}).values()) > MAX_SECRET:
            return status(422, "Invalid", f'ConfigMap "{name}" is invalid: []: Too long: may not be more than '
                          f"{MAX_SECRET} bytes", {"name": name, "kind": "ConfigMap"})
        if len(raw) > MAX_OBJECT:  # validation passed; etcd refuses what it cannot store
            return status(500, "InternalError", "etcdserver: request is too large")
        kind = RESOURCES[next(k for k in RESOURCES if k[1] == plural)][0]
        if ("namespaces", "", namespace) not in self.objects:
            return status(404, "NotFound", f'namespaces "{namespace}" not found',
                          {"name": namespace, "kind": "namespaces"})
        if plural == "secrets":  # (validated before etcd's limit, as the API server does)
            data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
            data.update({k: v.encode() for k, v in (body.pop("stringData", None) or {}).items()})
            if sum(len(v) for v in data.values()) > MAX_SECRET:
                return status(422, "Invalid", f'Secret "{name}" is invalid: data: Too long: may not be more '
                              f"than {MAX_SECRET} bytes", {"name": name, "kind": "Secret"})
            body["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
        with self.lock:
            if (plural, namespace, name) in self.objects:
                return status(409, "AlreadyExists", f'{plural}{".batch" if plural == "jobs" else ""} "{name}" '
                              "already exists", {"name": name, "kind": plural})
            extra = {k: v for k, v in body.items() if k not in ("kind", "apiVersion", "metadata")}
            obj = self.new(plural, name, namespace, body["metadata"].get("labels"), **extra)
            for key in ("annotations", "ownerReferences"):
                if key in body["metadata"]:
                    obj["metadata"][key] = body["metadata"][key]
            self.default(kind, obj)
            self.put(plural, namespace, obj)
        if plural == "jobs":
            threading.Thread(target=self.run_job, args=(namespace, name), daemon=True).start()
        elif plural == "deployments":
            threading.Thread(target=self.run_deployment, args=(namespace, name), daemon=True).start()
        elif plural == "services":
            self._open_proxy(namespace, name)
        return JSONResponse(obj, status_code=201)

    @staticmethod
    def default(kind: str, obj: dict[str, Any]) -> None:
        """The defaulting a real API server applies to what we create."""
        if kind == "Job":
            spec = obj["spec"]
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            obj["status"] = {}
        elif kind == "Deployment":
            obj["spec"].setdefault("replicas", 1)
            obj["status"] = {"observedGeneration": 0}
        elif kind == "Service":
            obj["spec"]["clusterIP"] = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
            obj["spec"].setdefault("type", "ClusterIP")
        elif kind == "HorizontalPodAutoscaler":
            obj["status"] = {"currentReplicas": 0, "desiredReplicas": 0}

    async def list_or_watch(self, request: Request, plural: str, namespace: str) -> Response:
        q = request.query_params
        selector, fields = q.get("labelSelector"), q.get("fieldSelector")
        if q.get("watch") in ("true", "1"):
            return StreamingResponse(self.watch(plural, namespace, q.get("resourceVersion") or "0", selector,
                                                q.get("allowWatchBookmarks") == "true",
                                                float(q.get("timeoutSeconds") or 1800)),
                                     media_type="application/json")
        with self.lock:
            items = [copy.deepcopy(o) for (p, n, _), o in self.objects.items()
                     if p == plural and n == namespace and matches(o["metadata"].get("labels") or {}, selector)
                     and field_matches(o, fields)]
            kind = RESOURCES[next(k for k in RESOURCES if k[1] == plural)][0]
            limit = int(q.get("limit") or 0)
            return JSONResponse({"kind": f"{kind}List", "apiVersion": items[0]["apiVersion"] if items else "v1",
                                 "metadata": {"resourceVersion": str(self.rv)},
                                 "items": items[:limit] if limit else items})

    async def watch(self, plural: str, namespace: str, since: str, selector: str | None, bookmarks: bool,
                    timeout: float) -> AsyncIterator[bytes]:
        version = int(since or 0)
        if version and version < self.compacted:
            yield (json.dumps({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                "message": f"too old resource version: {version} ({self.compacted})", "code": 410}}) + "\n").encode()
            return
        end = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        while time.monotonic() < end and not self._stopping and not self._paused:
            if version and version < self.compacted:
                yield (json.dumps({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                    "message": f"too old resource version: {version} ({self.compacted})", "code": 410}}) +
                    "\n").encode()
                return
            with self.lock:
                first = bisect.bisect_right(self.history, version, key=lambda entry: entry[0])
                events = [(rv, kind, obj) for rv, p, n, kind, obj in self.history[first:]
                          if p == plural and n == namespace and
                          matches(obj["metadata"].get("labels") or {}, selector)]
                current = self.rv
            for rv, kind, obj in events:
                yield (json.dumps({"type": kind, "object": obj}) + "\n").encode()
                version = rv
            if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_every:
                kind_name = RESOURCES[next(k for k in RESOURCES if k[1] == plural)][0]
                version = max(version, current)
                yield (json.dumps({"type": "BOOKMARK", "object": {
                    "kind": kind_name, "apiVersion": "v1", "metadata": {"resourceVersion": str(version)}}}) +
                    "\n").encode()
                last_bookmark = time.monotonic()
                self.bookmarks += 1
            await asyncio.sleep(0.02)

    def item_view(self, prefix: str) -> Any:
        async def view(request: Request) -> Response:
            namespace, plural, name = (request.path_params[k] for k in ("ns", "plural", "name"))
            info = self.resource(prefix, plural)
            if info is None:
                return status(404, "NotFound", "the server could not find the requested resource")
            verb = {"GET": "get", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}[request.method]
            denied = self.guard(request, namespace, plural, verb, info[2])
            if denied:
                return denied
            key = (plural, namespace, name)
            label = f"{plural}.{info[2]}" if info[2] else plural
            missing = status(404, "NotFound", f'{label} "{name}" not found', {"name": name, "kind": plural})
            if request.method == "GET":
                with self.lock:
                    obj = self.objects.get(key)
                    return JSONResponse(copy.deepcopy(obj)) if obj else missing
            if request.method == "DELETE":
                raw = await request.body()
                body = json.loads(raw) if raw else {}
                policy = request.query_params.get("propagationPolicy") or body.get("propagationPolicy") or \
                    ("Orphan" if plural == "jobs" else "Background")  # batch/v1 Jobs default to orphaning
                obj = await asyncio.to_thread(self.remove, plural, namespace, name, policy)
                if obj is None:
                    return missing
                return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                     "details": {"name": name, "kind": plural, "uid": obj["metadata"]["uid"]}})
            raw = await request.body()
            if len(raw) > MAX_OBJECT:
                return status(500, "InternalError", "etcdserver: request is too large")
            patch = json.loads(raw)
            apply = "apply-patch" in request.headers.get("content-type", "")
            with self.lock:
                obj = self.objects.get(key)
                if obj is None and not apply:
                    return missing
                if obj is None:  # server-side apply creates what does not exist
                    patch["metadata"]["name"] = name
                    created = True
                else:
                    created = False
            if created:
                return self.create(plural, namespace, json.dumps(patch).encode())
            with self.lock:
                before = json.dumps(obj.get("spec"), sort_keys=True)
                if plural == "secrets" and "data" in patch:
                    obj["data"] = dict(patch["data"])
                merge(obj, {k: v for k, v in patch.items() if k not in ("kind", "apiVersion")}, replace_lists=True)
                if json.dumps(obj.get("spec"), sort_keys=True) != before:
                    obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                self.touch(plural, obj)
                out = copy.deepcopy(obj)
            if plural == "deployments" and out["metadata"]["generation"] != int(
                    (out.get("status") or {}).get("observedGeneration") or 0):
                threading.Thread(target=self.run_deployment, args=(namespace, name), daemon=True).start()
            return JSONResponse(out)
        return view

    async def log_view(self, request: Request) -> Response:
        namespace, name = request.path_params["ns"], request.path_params["name"]
        denied = self.guard(request, namespace, "pods", "get", "")
        if denied:
            return denied
        if ("pods", namespace, name) not in self.objects:
            return status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        return PlainTextResponse(self.logs.get((namespace, name), ""))

    # -- the Job controller ---------------------------------------------------------------------
    def event(self, namespace: str, involved: dict[str, Any], reason: str, message: str,
              kind: str = "Warning") -> None:
        name = f"{involved['metadata']['name']}.{uuid.uuid4().hex[:10]}"
        obj = self.new("events", name, namespace, type=kind, reason=reason, message=message, count=1,
                       involvedObject={"kind": involved["kind"], "name": involved["metadata"]["name"],
                                       "namespace": namespace, "uid": involved["metadata"]["uid"]},
                       firstTimestamp=now(), lastTimestamp=now(), source={"component": "job-controller"})
        self.put("events", namespace, obj)

    def run_job(self, namespace: str, name: str) -> None:
        """NonIndexed (one pod at a time) or Indexed (one per index, up to parallelism; with
        backoffLimitPerIndex each index has its own retries and fails alone)."""
        job = self.objects[("jobs", namespace, name)]
        spec = job["spec"]
        indexed = spec.get("completionMode") == "Indexed"
        with self.lock:
            job["status"] = {"startTime": now(), "active": 0, "succeeded": 0, "failed": 0, "ready": 0}
            self.touch("jobs", job)
        # the deadline counts from startTime, which has whole-second precision
        started = datetime.strptime(job["status"]["startTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        deadline = started + spec.get("activeDeadlineSeconds", 10**6)
        backoff = spec.get("backoffLimit", 6)
        per_index = spec.get("backoffLimitPerIndex")
        rules = (spec.get("podFailurePolicy") or {}).get("rules", [])
        completions = spec.get("completions", 1) if indexed else 1
        active: dict[int, str] = {}
        counted: set[str] = set()
        index_failures: dict[int, int] = {}
        next_start: dict[int, float] = {}
        completed: set[int] = set()
        failed_indexes: set[int] = set()
        while ("jobs", namespace, name) in self.objects and not self._stopping:
            if time.time() >= deadline:
                return self.end_job(namespace, name, False, "DeadlineExceeded",
                                    "Job was active longer than specified deadline", list(active.values()))
            for index in range(completions):
                if len(active) >= spec.get("parallelism", 1):
                    break
                if index in active or index in completed or index in failed_indexes or \
                        time.monotonic() < next_start.get(index, 0.0):
                    continue
                pod_name = self.start_pod(job, index if indexed else None, index_failures.get(index, 0))
                if pod_name is None:
                    next_start[index] = time.monotonic() + 1.0  # admission refused it: the controller retries
                else:
                    active[index] = pod_name
            changed = False
            for index, pod_name in list(active.items()):
                pod = self.objects.get(("pods", namespace, pod_name))
                phase = pod["status"].get("phase") if pod else "Failed"
                if phase == "Succeeded":
                    del active[index]
                    completed.add(index)
                    changed = True
                elif phase == "Failed" and pod_name not in counted:
                    counted.add(pod_name)  # once per pod, in the same status update as any verdict
                    del active[index]
                    changed = True
                    index_failures[index] = index_failures.get(index, 0) + 1
                    with self.lock:
                        job["status"]["failed"] += 1
                        failed = job["status"]["failed"]
                    rule = self.matching_rule(rules, pod) if pod else None
                    if rule == "FailJob":
                        return self.end_job(namespace, name, False, "PodFailurePolicy",
                                            f"Pod {namespace}/{pod_name} has condition DisruptionTarget matching "
                                            "FailJob rule at index 0", list(active.values()))
                    if rule == "FailIndex" or (per_index is not None and index_failures[index] > per_index):
                        failed_indexes.add(index)
                    elif per_index is None and failed > backoff:
                        return self.end_job(namespace, name, False, "BackoffLimitExceeded",
                                            "Job has reached the specified backoff limit", list(active.values()))
                    else:
                        next_start[index] = time.monotonic() + self.backoff_base * 2 ** (index_failures[index] - 1)
            if changed:
                with self.lock:
                    job["status"].update({"active": len(active), "succeeded": len(completed)})
                    if indexed:
                        job["status"]["completedIndexes"] = ranges(completed)
                        if per_index is not None:
                            job["status"]["failedIndexes"] = ranges(failed_indexes)
            if len(completed) + len(failed_indexes) >= completions:
                if failed_indexes:
                    return self.end_job(namespace, name, False, "FailedIndexes", "Job has failed indexes", [])
                return self.end_job(namespace, name, True, "CompletionsReached",
                                    "Reached expected number of succeeded pods", [])
            if changed:
                self.touch("jobs", job)
            time.sleep(0.02)
        return None

    @staticmethod
    def matching_rule(rules: list[dict[str, Any]], pod: dict[str, Any]) -> str | None:
        conditions = {(c["type"], c["status"]) for c in pod["status"].get("conditions") or []}
        code = next((s["state"]["terminated"].get("exitCode") for s in pod["status"].get("containerStatuses") or []
                     if "terminated" in s.get("state", {})), None)
        for rule in rules:
            for cond in rule.get("onPodConditions") or []:
                if (cond["type"], cond.get("status", "True")) in conditions:
                    return str(rule["action"])
            exits = rule.get("onExitCodes")
            if exits and code is not None and (code in exits["values"]) == (exits["operator"] == "In"):
                return str(rule["action"])
        return None

    def end_job(self, namespace: str, name: str, ok: bool, reason: str, message: str, active: list[str]) -> None:
        """Interim condition first, pods stopped, then the final one (as the real controller does)."""
        interim, final = ("SuccessCriteriaMet", "Complete") if ok else ("FailureTarget", "Failed")
        with self.lock:
            job = self.objects.get(("jobs", namespace, name))
            if job is None:
                return
            job["status"].setdefault("conditions", []).append({
                "type": interim, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now(), "lastTransitionTime": now()})
            self.touch("jobs", job)
        for pod_name in active:
            pod = self.objects.get(("pods", namespace, pod_name))
            self.remove("pods", namespace, pod_name)
            if pod is not None and not ok:
                with self.lock:
                    job["status"]["failed"] += 1
        time.sleep(0.05)
        with self.lock:
            job["status"]["active"] = 0
            job["status"]["conditions"].append({"type": final, "status": "True", "reason": reason,
                                                "message": message, "lastProbeTime": now(),
                                                "lastTransitionTime": now()})
            job["status"]["completionTime" if ok else "failedTime"] = now()
            self.touch("jobs", job)
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            timer = threading.Timer(ttl, self.remove, args=("jobs", namespace, name, "Background"))
            timer.daemon = True
            timer.start()

    # -- the kubelet --------------------------------------------------------------------------
    def start_pod(self, job: dict[str, Any], index: int | None, failures: int = 0) -> str | None:
        namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
        template = copy.deepcopy(job["spec"]["template"])
        pod_name = f"{job_name}-{'' if index is None else f'{index}-'}{uuid.uuid4().hex[:5]}"
        labels = {**template["metadata"].get("labels", {}), "job-name": job_name,
                  "batch.kubernetes.io/job-name": job_name, "controller-uid": job["metadata"]["uid"]}
        annotations: dict[str, str] = {}
        if index is not None:  # as the Job controller marks Indexed pods
            labels[INDEX_KEY] = str(index)
            annotations = {INDEX_KEY: str(index), "batch.kubernetes.io/job-index-failure-count": str(failures)}
            for container in template["spec"]["containers"]:
                container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        quota = self.pod_quota.get(namespace)
        if quota is not None and len(self.pods(namespace)) >= quota:  # a ResourceQuota on pods
            self.event(namespace, job, "FailedCreate", f'Error creating: pods "{pod_name}" is forbidden: exceeded '
                       f"quota: pods, requested: pods=1, used: pods={len(self.pods(namespace))}, limited: pods={quota}")
            return None
        ns = self.objects.get(("namespaces", "", namespace))
        if ns and ns["metadata"]["labels"].get(RESTRICTED) == "restricted":
            violations = restricted_violations(template["spec"])
            if violations:
                self.event(namespace, job, "FailedCreate", f'Error creating: pods "{pod_name}" is forbidden: '
                           f'violates PodSecurity "restricted:latest": {", ".join(violations)}')
                return None
        pod = self.new("pods", pod_name, namespace, labels, spec=template["spec"],
                       status={"phase": "Pending", "conditions": [], "containerStatuses": []})
        pod["metadata"]["annotations"] = annotations
        pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                               "uid": job["metadata"]["uid"], "controller": True}]
        self.put("pods", namespace, pod)
        threading.Thread(target=self.run_pod, args=(namespace, pod_name), daemon=True).start()
        return pod_name

    def run_pod(self, namespace: str, pod_name: str, port: int | None = None) -> None:
        key = (namespace, pod_name)
        pod = self.objects.get(("pods", namespace, pod_name))
        if pod is None:
            return
        spec = pod["spec"]
        container = spec["containers"][0]
        image = container["image"]
        requested = cpu(container.get("resources", {}).get("requests", {}).get("cpu"))

        def container_status(state: dict[str, Any], ready: bool = False) -> list[dict[str, Any]]:
            return [{"name": container["name"], "image": image, "imageID": f"docker-pullable://{image}",
                     "ready": ready, "restartCount": 0, "started": "running" in state, "state": state}]

        if requested > self.node_cpu:
            with self.lock:
                pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/1 nodes are available: 1 Insufficient cpu. preemption: "
                                                           "0/1 nodes are available: 1 No preemption victims found "
                                                           "for incoming pod."}]
                self.touch("pods", pod)
            return
        with self.lock:
            pod["spec"]["nodeName"] = "loopback-node"
            pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
            self.touch("pods", pod)
        if "no-python" in image:  # an image without the program: exec fails before the container runs
            with self.lock:
                pod["status"].update({"phase": "Failed", "containerStatuses": container_status({"terminated": {
                    "exitCode": 128, "reason": "StartError", "startedAt": now(), "finishedAt": now(),
                    "message": f'failed to create containerd task: exec: "{container["command"][0]}": executable '
                               "file not found in $PATH: unknown"}})})
                self.touch("pods", pod)
            return
        if "does-not-exist" in image:
            with self.lock:
                pod["status"]["containerStatuses"] = container_status({"waiting": {
                    "reason": "ErrImagePull", "message": f'failed to pull image "{image}": not found'}})
                self.touch("pods", pod)
            return
        # volumes: Secrets (waiting until they exist, as the kubelet retries a mount) and emptyDirs
        root = tempfile.mkdtemp(prefix=f"kube-{pod_name}-")
        self.dirs[key] = root
        mounts: dict[str, str] = {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            path = os.path.join(root, mount["name"])
            os.makedirs(path, exist_ok=True)
            if "secret" in volume:
                deadline = time.monotonic() + 30
                while ("secrets", namespace, volume["secret"]["secretName"]) not in self.objects:
                    if time.monotonic() > deadline or ("pods", namespace, pod_name) not in self.objects:
                        return
                    time.sleep(0.05)
                secret = self.objects[("secrets", namespace, volume["secret"]["secretName"])]
                for file, value in (secret.get("data") or {}).items():
                    with open(os.path.join(path, file), "wb") as out:
                        out.write(base64.b64decode(value))
            mounts[mount["mountPath"]] = path
        termination = os.path.join(root, "termination-log")  # the kubelet mounts this file at the path
        open(termination, "w").close()
        mounts[container.get("terminationMessagePath", "/dev/termination-log")] = termination
        env: dict[str, str] = {}
        for entry in container.get("env", []):
            value = self.env_value(namespace, entry, env)
            if value is None:
                with self.lock:
                    pod["status"]["containerStatuses"] = container_status({"waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": f'secret "{entry["valueFrom"]["secretKeyRef"]["name"]}" not found'}})
                    self.touch("pods", pod)
                return
            env[entry["name"]] = self.rehome(value, mounts)
        argv = [self.rehome(expand(a, env), mounts) for a in container.get("command", []) + container.get("args", [])]
        if port is not None:  # a replica of a Deployment: its own free port instead of the containerPort
            argv = [str(port) if a == str(container["ports"][0]["containerPort"]) else a for a in argv]
        too_long = [n for n, v in env.items() if len(n) + 1 + len(v) + 1 > MAX_ARG]
        if too_long:
            message = (f"failed to create containerd task: failed to start shim: exec: \"{argv[0]}\": "
                       "argument list too long: unknown")
            with self.lock:
                pod["status"].update({"phase": "Failed", "containerStatuses": container_status({"terminated": {
                    "exitCode": 128, "reason": "StartError", "message": message, "startedAt": now(),
                    "finishedAt": now()}})})
                self.touch("pods", pod)
            return
        proc_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod_name, **env}
        if os.environ.get("PYTHONPATH"):
            proc_env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        if port is not None:  # the peer server imports this checkout, as an image with the package would
            proc_env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen(argv, env=proc_env, text=True, cwd=mounts.get("/tmp", root),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            with self.lock:
                pod["status"].update({"phase": "Failed", "containerStatuses": container_status({"terminated": {
                    "exitCode": 128, "reason": "StartError", "message": str(exc), "startedAt": now(),
                    "finishedAt": now()}})})
                self.touch("pods", pod)
            return
        with self.lock:
            if ("pods", namespace, pod_name) not in self.objects:
                os.killpg(proc.pid, signal.SIGKILL)
                return
            self.procs[key] = proc
            pod["status"].update({"phase": "Running", "startTime": now(), "podIP": "127.0.0.1",
                                  "containerStatuses": container_status({"running": {"startedAt": now()}}, True)})
            self.touch("pods", pod)
        timer = None
        if spec.get("activeDeadlineSeconds"):  # the kubelet stops a pod that outlives its own deadline
            timer = threading.Timer(spec["activeDeadlineSeconds"], self._pod_deadline, args=(namespace, pod_name))
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            self.logs[key] = self.logs.get(key, "") + line
        code = proc.wait()
        if timer is not None:
            timer.cancel()
        with self.lock:
            pod = self.objects.get(("pods", namespace, pod_name))
            if pod is None:
                return
            if pod["status"].get("reason") == "DeadlineExceeded":
                return
            pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            with open(termination, encoding="utf-8", errors="replace") as f:
                message = f.read(4096)
            if not message and code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                message = "\n".join(self.logs.get(key, "").splitlines()[-80:])[-2048:]
            pod["status"]["containerStatuses"] = container_status({"terminated": {
                "exitCode": code if code >= 0 else 128 - code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": pod["status"].get("startTime"), "finishedAt": now(),
                **({"message": message} if message else {})}})
            self.touch("pods", pod)

    @staticmethod
    def rehome(value: str, mounts: dict[str, str]) -> str:
        """A path under a volume's mountPath, as this process sees it (the volume is a directory
        here, not a mount in a container's filesystem)."""
        for mount_path, host in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return host + value[len(mount_path):]
        return value

    def _pod_deadline(self, namespace: str, pod_name: str) -> None:
        with self.lock:
            pod = self.objects.get(("pods", namespace, pod_name))
            if pod is None or pod["status"].get("phase") != "Running":
                return
            pod["status"].update({"phase": "Failed", "reason": "DeadlineExceeded",
                                  "message": "Pod was active on the node longer than the specified deadline"})
            self.touch("pods", pod)
        self.kill((namespace, pod_name))

    def env_value(self, namespace: str, entry: dict[str, Any], env: dict[str, str]) -> str | None:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:  # not expanded: only `value` is
            secret = self.objects.get(("secrets", namespace, ref["name"]))
            if secret is None or ref["key"] not in (secret.get("data") or {}):
                return None
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        return expand(str(entry.get("value", "")), env)

    def kill(self, key: tuple[str, str], sig: int = signal.SIGTERM, grace: float = 2.0) -> None:
        """Graceful deletion: SIGTERM, then SIGKILL after the grace period."""
        proc = self.procs.get(key)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # -- the Deployment controller and Services -------------------------------------------------
    def run_deployment(self, namespace: str, name: str) -> None:
        """Replace the replicas with ones of the current template; ready once each answers /health."""
        import urllib.request

        with self.lock:
            deployment = self.objects.get(("deployments", namespace, name))
            if deployment is None:
                return
            generation = deployment["metadata"]["generation"]
            template = copy.deepcopy(deployment["spec"]["template"])
            replicas = deployment["spec"].get("replicas", 1)
        for pod in self.pods(namespace):
            if pod["metadata"]["labels"].get("mahavishnu.test/deployment") == name:
                self.remove("pods", namespace, pod["metadata"]["name"])
        ports = []
        for _ in range(replicas):
            pod_name = f"{name}-{uuid.uuid4().hex[:10]}"
            labels = {**template["metadata"].get("labels", {}), "mahavishnu.test/deployment": name}
            pod = self.new("pods", pod_name, namespace, labels, spec=template["spec"], status={"phase": "Pending"})
            self.put("pods", namespace, pod)
            port = free_port()
            ports.append(port)
            threading.Thread(target=self.run_pod, args=(namespace, pod_name, port), daemon=True).start()
        self._replica_ports[(namespace, name)] = ports
        deadline = time.monotonic() + 60
        ready = 0
        for port in ports:
            while time.monotonic() < deadline and ("deployments", namespace, name) in self.objects:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        ready += 1
                        break
                except OSError:
                    time.sleep(0.1)
        with self.lock:
            deployment = self.objects.get(("deployments", namespace, name))
            if deployment is None or deployment["metadata"]["generation"] != generation:
                return
            deployment["status"] = {"observedGeneration": generation, "replicas": replicas, "readyReplicas": ready,
                                    "updatedReplicas": replicas, "availableReplicas": ready}
            self.touch("deployments", deployment)

    def set_ready_replicas(self, namespace: str, name: str, ready: int) -> None:
        """What the HPA and the ReplicaSet would report after scaling (no metrics server here)."""
        with self.lock:
            deployment = self.objects[("deployments", namespace, name)]
            deployment["status"].update({"readyReplicas": ready, "replicas": ready, "updatedReplicas": ready,
                                         "availableReplicas": ready})
            self.touch("deployments", deployment)

    def _open_proxy(self, namespace: str, name: str) -> None:
        """The Service: a TCP proxy on its own loopback address, to the Deployment's replicas."""
        service = self.objects[("services", namespace, name)]
        host = service["spec"]["clusterIP"]
        port = service["spec"]["ports"][0]["port"]
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError:  # taken (unlikely on a random 127/8 address): a free port on it instead
            listener.bind((host, 0))
            service["spec"]["ports"][0]["port"] = listener.getsockname()[1]
        listener.listen(16)
        self._proxies[(namespace, name)] = listener
        selector = service["spec"].get("selector") or {}

        def backends() -> list[int]:
            out = []
            for pod in self.pods(namespace):
                labels = pod["metadata"].get("labels") or {}
                deployment = labels.get("mahavishnu.test/deployment")
                if deployment and matches(labels, ",".join(f"{k}={v}" for k, v in selector.items())):
                    out += self._replica_ports.get((namespace, deployment), [])
            return sorted(set(out))

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        def serve() -> None:
            turn = 0
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                ports = backends()
                if not ports:
                    client.close()
                    continue
                turn += 1
                try:
                    upstream = socket.create_connection(("127.0.0.1", ports[turn % len(ports)]))
                except OSError:
                    client.close()
                    continue
                threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

    def _close_proxy(self, namespace: str, name: str) -> None:
        listener = self._proxies.pop((namespace, name), None)
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0 if not self.url else int(self.url.rsplit(":", 1)[1])))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback Kubernetes API did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def pause(self) -> None:
        """The API server goes away (connections refused) until resume(); the cluster runs on."""
        if self._server is not None:
            self._paused = True  # open watch streams end, as their connections would
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
            self._paused = False

    def resume(self) -> None:
        self.start()

    def stop(self) -> None:
        self._stopping = True
        for key in list(self.procs):
            self.kill(key, signal.SIGKILL, grace=0.1)
        for key in list(self._proxies):
            self._close_proxy(*key)
        if self._server is not None:
            self._server.should_exit = True
        for root in self.dirs.values():
            shutil.rmtree(root, ignore_errors=True)


def ranges(indexes: set[int]) -> str:
    """The Job status's interval notation: {0, 1, 2, 5} -> "0-2,5"."""
    out: list[str] = []
    for i in sorted(indexes):
        if out and "-" not in out[-1].split(",")[-1] and int(out[-1]) == i - 1:
            out[-1] = f"{out[-1]}-{i}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def merge(target: dict[str, Any], patch: dict[str, Any], replace_lists: bool = True) -> None:
    """JSON merge patch (RFC 7386): null deletes, objects merge, everything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, replace_lists)
        else:
            target[key] = copy.deepcopy(value)
