"""Reading a Job and its Pods as the Job controller and the kubelet report them.

A Job's outcome is its conditions, never a guess from its pods: `SuccessCriteriaMet` then
`Complete`, or `FailureTarget` then `Failed`, each with a reason (`DeadlineExceeded` is a
timeout; `BackoffLimitExceeded` spent the retries; `PodFailurePolicy` a rule matched, here a
disruption). Retries are `status.failed`, which the controller counts once per pod. Pods are
read for what conditions do not say: the result line in the log, why a container could not
start, why a pod is not scheduled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pools.backends.kubernetes.manifests import INDEX_KEY, MARKER

# A container that waits for one of these will not start by waiting longer: the pool's
# configuration is wrong (image, Secret, command), not the task.
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
         "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
DONE_TYPES = ("Complete", "SuccessCriteriaMet")
FAILED_TYPES = ("Failed", "FailureTarget")


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    reason: str
    message: str

    @property
    def timed_out(self) -> bool:
        return self.reason == "DeadlineExceeded"

    @property
    def disrupted(self) -> bool:
        """A PodFailurePolicy rule matched: ours fails the Job only on DisruptionTarget."""
        return self.reason == "PodFailurePolicy"


def outcome(job: Any) -> Outcome | None:
    """The Job's verdict from its conditions, as soon as the controller has one."""
    conditions = {c.type: c for c in (job.status.conditions or []) if c.status == "True"} if job.status else {}
    for kind in DONE_TYPES:
        if kind in conditions:
            return Outcome(True, conditions[kind].reason or kind, conditions[kind].message or "")
    for kind in FAILED_TYPES:
        if kind in conditions:
            return Outcome(False, conditions[kind].reason or kind, conditions[kind].message or "")
    return None


def indexes(text: str | None) -> set[int]:
    """The Job status's interval notation: "0-2,5" -> {0, 1, 2, 5}."""
    out: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


def index_of(pod: Any) -> int | None:
    """An Indexed Job's pod: its completion index; None for a plain Job's pod."""
    meta = pod.metadata
    raw = (meta.annotations or {}).get(INDEX_KEY) or (meta.labels or {}).get(INDEX_KEY)
    return int(raw) if raw is not None and raw.isdigit() else None


def index_failures(pod: Any) -> int:
    raw = (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-index-failure-count", "0")
    return int(raw) if raw.isdigit() else 0


def pod_timed_out(pod: Any) -> bool:
    """The kubelet stopped it at its own activeDeadlineSeconds (an Indexed Job's shard timeout)."""
    return bool(pod.status and pod.status.reason == "DeadlineExceeded")


def failures(job: Any) -> int:
    return int(job.status.failed or 0) if job.status else 0


def job_of(pod: Any) -> str | None:
    labels = pod.metadata.labels or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def phase(pod: Any) -> str:
    return str(pod.status.phase or "Pending") if pod.status else "Pending"


def stuck(pod: Any) -> tuple[str, str] | None:
    """(reason, message) when the container waits for something that will not come."""
    for status in (pod.status.container_statuses or []) if pod.status else []:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in STUCK:
            return waiting.reason, waiting.message or ""
    return None


def terminated(pod: Any) -> tuple[str, str, int] | None:
    """(reason, message, exit code) of the container that ended, e.g. StartError."""
    for status in (pod.status.container_statuses or []) if pod.status else []:
        ended = status.state.terminated if status.state else None
        if ended is not None:
            return ended.reason or "", ended.message or "", int(ended.exit_code or 0)
    return None


def disruption(pod: Any) -> str | None:
    for cond in (pod.status.conditions or []) if pod.status else []:
        if cond.type == "DisruptionTarget" and cond.status == "True":
            return f"{cond.reason}: {cond.message}".strip(": ")
    return None


def unschedulable(pod: Any) -> str | None:
    for cond in (pod.status.conditions or []) if pod.status else []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"{cond.reason}: {cond.message}"
    return None


def result_line(log: str) -> dict[str, Any] | None:
    """The runner's last MAHAVISHNU_RESULT line, parsed; None when there is none."""
    for line in reversed(log.splitlines()):
        if line.startswith(MARKER):
            try:
                parsed = json.loads(line[len(MARKER):])
            except ValueError:
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def why_pod_failed(pod: Any, log: str | None) -> str:
    """What a failed pod says for itself: its result's error, else the container's own report."""
    result = result_line(log or "")
    if result is not None and not result.get("ok") and result.get("error"):
        return str(result["error"])
    name = pod.metadata.name
    ended = terminated(pod)
    if ended is not None:
        reason, message, code = ended
        if reason not in ("", "Error", "Completed", "OOMKilled"):
            return f"pod {name} could not run its container: {reason} (exit code {code}): {message}".rstrip(": ")
        if reason == "OOMKilled":
            return f"pod {name} ran out of memory (OOMKilled, exit code {code}); raise --memory-limit"
    tail = (log or "")[-500:]
    code_note = f" (exit code {ended[2]})" if ended else ""
    return f"pod {name} failed{code_note} without a result line; log tail: {tail}" if tail else \
        f"pod {name} failed{code_note} without a result line and without output"
