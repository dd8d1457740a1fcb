"""What the Kubernetes backend asks the API server to create, as pure functions of their inputs.

Tests compare these with what an API server accepts (defaulting, validation, the `restricted`
Pod Security Standard). Nothing here talks to a cluster.

    task ──> job_name(task id, attempt) ──> payload_secret (the task as a file) + task_job
    warm pool ──> warm_secret, warm_deployment, warm_service, warm_hpa (applied server-side)
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

from pools.models import PoolConfig

# The Job's program: the stdlib task implementations, then the runner that picks one.
_HERE = Path(__file__).resolve().parent
RUNNER = (_HERE.parents[1] / "task_types" / "stdlib_runs.py").read_text() + "\n" + \
    (_HERE.parent / "k8s_runner.py").read_text()
MARKER = "MAHAVISHNU_RESULT "
POOL_LABEL = "mahavishnu.io/pool"
TASK_LABEL = "mahavishnu.io/task"
ATTEMPT_LABEL = "mahavishnu.io/attempt"
MANAGER = "mahavishnu"
TASK_DIR = "/var/run/mahavishnu/task"  # where the payload Secret is mounted, read-only
TASK_FILE = "task.json"
SHARD_FILE = "task-{index}.json"  # an Indexed Job's shard i reads task-i.json (the runner fills in i)
TASKS_ANNOTATION = "mahavishnu.io/tasks"  # an Indexed Job's task ids, in index order: adoption reads it
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
SIGTERM_EXIT = 143  # the runner stopped by SIGTERM: its pod was deleted (a cancelled shard) or evicted
SCRATCH = "/tmp"  # an emptyDir: the root filesystem is read-only
TERMINATION_LOG = "/dev/termination-log"  # a small result rides in the pod's status from here
WARM_PORT = 8678
RUNNER_FILE = "runner.py"
# A Secret holds at most 1 MiB of data (the API server refuses more): the runner (~5 KB) and the
# task's JSON (type and context around the payload) must fit; so must the shards of an Indexed Job.
SECRET_BYTES = 1 << 20
MAX_TASK_BYTES = 1_000_000
NOBODY = 65534  # runAsNonRoot needs a numeric user; stock images run as root otherwise
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "128Mi"}


def dns_name(*parts: str) -> str:
    """A DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters."""
    raw = "-".join(parts).lower()
    cleaned = "".join(c if c.isascii() and c.isalnum() else "-" for c in raw).strip("-")
    return cleaned[:63].rstrip("-")


def label_value(value: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "-" for c in value)[:63]
    return cleaned.strip("-_.") or "x"


def task_key(task_id: str) -> str:
    return task_id.removeprefix("task_")


def job_name(task_id: str, attempt: int) -> str:
    """The same task and attempt always give the same name: a restart finds its Jobs, and a
    second create of one is refused (409) instead of running the task twice."""
    return dns_name("mhv", task_key(task_id), str(attempt))


def labels(config: PoolConfig, pool_id: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mahavishnu", "app.kubernetes.io/instance": label_value(config.name),
            "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": MANAGER,
            POOL_LABEL: pool_id}


def pool_selector(pool_id: str) -> str:
    return f"{POOL_LABEL}={pool_id}"


def resources(config: PoolConfig) -> dict[str, dict[str, str]]:
    """Requests default to a small slice so the scheduler can place pods; limits only when asked."""
    requests = dict(DEFAULT_REQUESTS)
    if config.cpu_request:
        requests["cpu"] = config.cpu_request
    if config.memory_request:
        requests["memory"] = config.memory_request
    out: dict[str, dict[str, str]] = {"requests": requests}
    limits = {k: v for k, v in (("cpu", config.cpu_limit), ("memory", config.memory_limit)) if v}
    if limits:
        out["limits"] = limits
    return out


def pod_security() -> dict[str, Any]:
    """The pod half of the `restricted` Pod Security Standard."""
    return {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    """The container half: no privilege escalation, every capability dropped, read-only root."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "runAsNonRoot": True}


def task_document(task_id: str, task_type: str, type_ref: str, payload: dict[str, Any],
                  context: dict[str, Any]) -> bytes:
    return json.dumps({"task_id": task_id, "task_type": task_type, "type_ref": type_ref, "payload": payload,
                       "context": context}, separators=(",", ":")).encode()


def payload_secret(name: str, meta_labels: dict[str, str], documents: list[bytes]) -> dict[str, Any]:
    """The task travels as a file, never through env or argv: the kubelet expands `$(VAR)` and `$$`
    in env values and argv, and one env var over 128 KiB cannot be exec'd (E2BIG). The shards of
    an Indexed Job are one file each. The runner's source is a file beside them, so the Job and
    its pods stay small (every watch event carries them whole)."""
    files = {TASK_FILE: documents[0]} if len(documents) == 1 else \
        {SHARD_FILE.format(index=i): doc for i, doc in enumerate(documents)}
    files[RUNNER_FILE] = RUNNER.encode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": meta_labels},
            "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}


def owned_by(job: dict[str, Any] | Any, name: str) -> dict[str, Any]:
    """A patch making an object owned by the Job `name` (uid), so the garbage collector removes
    it with the Job (cancel, TTL, kubectl delete)."""
    uid = job["metadata"]["uid"] if isinstance(job, dict) else job.metadata.uid
    return {"metadata": {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                              "blockOwnerDeletion": False}]}}


def task_job(config: PoolConfig, pool_id: str, name: str, task_ids: list[str], attempt: int, timeout: float,
             retries: int, ttl: int, trace: dict[str, str], parallelism: int = 1) -> dict[str, Any]:
    """One Job for one task, or an Indexed Job for the shards of one distribution.

    One task: retries are the Job's backoffLimit (Kubernetes starts a new pod for each); the
    timeout is its activeDeadlineSeconds (condition reason DeadlineExceeded). A pod disrupted by
    the cluster (eviction, preemption, node drain: condition DisruptionTarget) fails the Job at
    once with reason PodFailurePolicy: a pool fault, which distribution retries on another pool,
    never a retry counted against the task.

    Shards: completions = shards, each index with its own retries (backoffLimitPerIndex) and its
    own timeout (the pod's activeDeadlineSeconds, counted from its start); a failed index fails
    only itself (maxFailedIndexes = all). A disrupted pod, or one stopped by SIGTERM (a cancelled
    shard's pod deleted), fails its index at once (FailIndex) instead of being replaced."""
    shards = len(task_ids) > 1
    meta_labels = {**labels(config, pool_id, "task"), TASK_LABEL: label_value(task_key(task_ids[0])),
                   ATTEMPT_LABEL: str(attempt)}
    task_file = f"{TASK_DIR}/{SHARD_FILE if shards else TASK_FILE}"
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": SCRATCH},
           {"name": "TMPDIR", "value": SCRATCH}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
           {"name": "MAHAVISHNU_TASK_FILE", "value": task_file},
           {"name": "MAHAVISHNU_RESULT_FILE", "value": TERMINATION_LOG}]
    if trace.get("traceparent"):
        env.append({"name": "TRACEPARENT", "value": trace["traceparent"]})
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [{
            "name": "task", "image": config.container_image, "command": ["python", f"{TASK_DIR}/{RUNNER_FILE}"],
            "env": env,
            "resources": resources(config), "securityContext": container_security(),
            "terminationMessagePath": TERMINATION_LOG, "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "task", "mountPath": TASK_DIR, "readOnly": True},
                             {"name": "scratch", "mountPath": SCRATCH}]}],
        "volumes": [{"name": "task", "secret": {"secretName": name, "defaultMode": 0o444}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    deadline = max(1, math.ceil(timeout))
    disrupted = {"onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    spec: dict[str, Any] = {"ttlSecondsAfterFinished": ttl, "template": {"metadata": {"labels": meta_labels},
                                                                         "spec": pod_spec}}
    metadata: dict[str, Any] = {"name": name, "namespace": config.namespace, "labels": meta_labels}
    if shards:
        waves = math.ceil(len(task_ids) / max(1, parallelism))
        pod_spec["activeDeadlineSeconds"] = deadline
        metadata["annotations"] = {TASKS_ANNOTATION: ",".join(task_key(t) for t in task_ids)}
        spec.update({
            "completionMode": "Indexed", "completions": len(task_ids), "parallelism": max(1, parallelism),
            "backoffLimitPerIndex": retries, "maxFailedIndexes": len(task_ids),
            # a backstop only: each shard has its own deadline; this one covers every wave of them
            "activeDeadlineSeconds": deadline * (retries + 1) * waves + 60,
            "podFailurePolicy": {"rules": [
                {"action": "FailIndex", **disrupted},
                {"action": "FailIndex", "onExitCodes": {"containerName": "task", "operator": "In",
                                                        "values": [SIGTERM_EXIT]}},
            ]},
        })
    else:
        spec.update({"backoffLimit": retries, "activeDeadlineSeconds": deadline,
                     "podFailurePolicy": {"rules": [{"action": "FailJob", **disrupted}]}})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


# -- warm mode: a Deployment of the peer server behind a Service, scaled by an HPA ------------------
def warm_name(pool_id: str) -> str:
    return dns_name("mhv-warm", pool_id)


def warm_labels(config: PoolConfig, pool_id: str) -> dict[str, str]:
    return labels(config, pool_id, "warm-peer")


def warm_selector(config: PoolConfig, pool_id: str) -> dict[str, str]:
    """What the Service and Deployment select: stable across changes of the other labels."""
    return {POOL_LABEL: pool_id, "app.kubernetes.io/component": "warm-peer"}


def warm_secret(config: PoolConfig, pool_id: str, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": warm_name(pool_id), "labels": warm_labels(config, pool_id)},
            "data": {"token": base64.b64encode(token.encode()).decode()}}


def warm_deployment(config: PoolConfig, pool_id: str, enabled_task_types: list[str]) -> dict[str, Any]:
    name = warm_name(pool_id)
    env = [{"name": "MAHAVISHNU_PEER_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}},
           {"name": "MAHAVISHNU_HOME", "value": f"{SCRATCH}/mahavishnu"},
           {"name": "HOME", "value": SCRATCH},
           # the peer runs what the server runs, nothing more
           {"name": "MAHAVISHNU_ENABLE_TASK_TYPES", "value": ",".join(enabled_task_types)}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": warm_labels(config, pool_id)},
        "spec": {
            "replicas": max(1, config.min_workers),
            "selector": {"matchLabels": warm_selector(config, pool_id)},
            "template": {
                "metadata": {"labels": warm_labels(config, pool_id)},
                "spec": {
                    "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "securityContext": pod_security(),
                    "containers": [{
                        "name": "peer", "image": config.container_image,
                        "command": ["mahavishnu", "peer", "serve", "--host", "0.0.0.0", "--port", str(WARM_PORT)],
                        "env": env, "ports": [{"containerPort": WARM_PORT, "name": "mcp"}],
                        "readinessProbe": {"httpGet": {"path": "/health", "port": WARM_PORT}},
                        "resources": resources(config), "securityContext": container_security(),
                        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}]}],
                    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def warm_service(config: PoolConfig, pool_id: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": warm_name(pool_id), "labels": warm_labels(config, pool_id)},
            "spec": {"selector": warm_selector(config, pool_id),
                     "ports": [{"name": "mcp", "port": WARM_PORT, "targetPort": WARM_PORT}]}}


def warm_hpa(config: PoolConfig, pool_id: str) -> dict[str, Any]:
    name = warm_name(pool_id)
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": warm_labels(config, pool_id)},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": max(1, config.min_workers), "maxReplicas": config.max_workers,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": config.cpu_target_percent}}}]}}
