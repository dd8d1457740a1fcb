"""Small builders and waits for the control plane's own tests (objects as plain dicts, which the
official client sends as they are)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from tests.helpers.waiting import wait_until_sync

WAIT = 180.0  # generous: the controllers and the agent share a busy machine with the tests
IMAGE = "python:3.13-slim"  # the node agent runs every image as this machine


def eventually(condition: Callable[[], bool], what: str) -> None:
    wait_until_sync(condition, timeout=WAIT, interval=0.25, what=what)


def job(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE, "command": ["python", "-c", code], **spec.pop("container", {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}


def pod(name: str, argv: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE, "command": argv, **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def finished(api: Any, namespace: str, name: str) -> Any:
    """Wait for the Job's Complete or Failed condition and return that condition."""
    found: list[Any] = []

    def done() -> bool:
        status = client.BatchV1Api(api).read_namespaced_job_status(name, namespace).status
        found[:] = [c for c in status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"]
        return bool(found)

    eventually(done, f"Job {name} to finish")
    return found[0]


def job_pods(api: Any, namespace: str, name: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def pod_when(api: Any, namespace: str, name: str, test: Callable[[Any], bool], what: str) -> Any:
    core = client.CoreV1Api(api)
    seen: list[Any] = []

    def reached() -> bool:
        seen[:] = [core.read_namespaced_pod(name, namespace)]
        return test(seen[0])

    eventually(reached, f"pod {name}: {what}")
    return seen[0]


def wait_pod(api: Any, namespace: str, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed")) -> Any:
    return pod_when(api, namespace, name, lambda p: p.status.phase in phases, f"phase in {phases}")


def waiting_reason(p: Any) -> str | None:
    statuses = p.status.container_statuses or []
    return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except client.exceptions.ApiException as exc:
        return bool(exc.status == 404)
    return False
