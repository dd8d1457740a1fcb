"""The `kubernetes` pool type, one module per concern:

    api.py        the client from the pool's configuration; API errors in words; what is transient
    manifests.py  Jobs, Secrets and the warm objects, as pure functions
    informer.py   list+watch of the pool's Jobs and Pods; health from how the API answers
    jobs.py       reading a Job's conditions and its Pods' states
    backend.py    KubernetesBackend: tasks to Jobs and back
    warm.py       warm mode: a Deployment of the peer server behind a Service, with an HPA
"""

from pools.backends.kubernetes.backend import STDLIB_TYPES, KubernetesBackend
from pools.backends.kubernetes.manifests import MARKER, MAX_TASK_BYTES, RUNNER, dns_name, job_name

__all__ = ["MARKER", "MAX_TASK_BYTES", "RUNNER", "STDLIB_TYPES", "KubernetesBackend", "dns_name", "job_name"]
