"""The control plane the tests run against: a Job created with the official client completes and
its log reads through the API server; the real Job controller counts a failing Job's pods and
gives Indexed Jobs their index; Pod Security `restricted` and RBAC refuse with their messages."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubernetes import client
from tests.k8s.control_plane import KubeCluster
from tests.k8s.objects import finished, job, job_pods, pod


def test_a_job_completes_and_its_log_reads_through_the_api_server(api: Any, namespace: str) -> None:
    code = "import os; print('hello', os.environ['GREETING'], os.environ['HOSTNAME'])"
    env = [{"name": "NAME", "value": "world"}, {"name": "GREETING", "value": "$(NAME) costs $$(NAME) $(NOPE)"}]
    client.BatchV1Api(api).create_namespaced_job(namespace, job("hello", code, container={"env": env}))
    assert finished(api, namespace, "hello").type == "Complete"
    [p] = job_pods(api, namespace, "hello")
    terminated = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, terminated.exit_code, terminated.reason) == ("Succeeded", 0, "Completed")
    log = client.CoreV1Api(api).read_namespaced_pod_log(p.metadata.name, namespace)
    assert log == f"hello world costs $(NAME) $(NOPE) {p.metadata.name}\n"
    tail = client.CoreV1Api(api).read_namespaced_pod_log(p.metadata.name, namespace, tail_lines=1, timestamps=True)
    assert tail.endswith(f" hello world costs $(NAME) $(NOPE) {p.metadata.name}\n") and tail[:4].isdigit()


def test_the_job_controller_counts_a_failing_jobs_pods(api: Any, namespace: str) -> None:
    client.BatchV1Api(api).create_namespaced_job(namespace, job("fails", "raise SystemExit(3)", backoffLimit=1))
    assert finished(api, namespace, "fails").reason == "BackoffLimitExceeded"
    assert client.BatchV1Api(api).read_namespaced_job_status("fails", namespace).status.failed == 2
    codes = sorted(p.status.container_statuses[0].state.terminated.exit_code for p in job_pods(api, namespace, "fails"))
    assert codes == [3, 3]


def test_an_indexed_job_gives_each_pod_its_completion_index(api: Any, namespace: str) -> None:
    code = "import os; print('index', os.environ['JOB_COMPLETION_INDEX'])"
    client.BatchV1Api(api).create_namespaced_job(namespace, job(
        "indexed", code, completionMode="Indexed", completions=3, parallelism=3))
    assert finished(api, namespace, "indexed").type == "Complete"
    core = client.CoreV1Api(api)
    logs = sorted(core.read_namespaced_pod_log(p.metadata.name, namespace) for p in job_pods(api, namespace, "indexed"))
    assert logs == ["index 0\n", "index 1\n", "index 2\n"]


def test_restricted_pod_security_refuses_a_pod_with_its_admission_message(kube_cluster: KubeCluster,
                                                                         api: Any) -> None:
    namespace = kube_cluster.create_namespace("restricted", restricted=True)
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).create_namespaced_pod(namespace, pod("loose", ["true"]))
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403
    assert message.startswith('pods "loose" is forbidden: violates PodSecurity "restricted:latest": ')
    assert 'runAsNonRoot != true (pod or container "main" must set securityContext.runAsNonRoot=true)' in message


def test_a_user_bound_to_a_namespaced_role_may_not_create_namespaces(kube_cluster: KubeCluster,
                                                                      namespace: str) -> None:
    role = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: runner}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list, watch]
"""
    user = kube_cluster.user_with_role(namespace, role)
    with kube_cluster.api_client(user.token) as as_user:
        core = client.CoreV1Api(as_user)
        assert core.list_namespaced_pod(namespace).items == []
        with pytest.raises(ApiException) as refused:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"x-{uuid.uuid4().hex[:6]}")))
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 403
    assert f'User "system:serviceaccount:{namespace}:{user.name}" cannot create resource "namespaces"' in message


def test_the_repository_role_binds_as_written(kube_cluster: KubeCluster, namespace: str) -> None:
    rbac = Path(__file__).resolve().parents[2] / "kubernetes" / "rbac.yaml"
    user = kube_cluster.user_with_role(namespace, rbac, roles=("mahavishnu-tasks",))
    with kube_cluster.api_client(user.token) as as_user:
        assert client.CoreV1Api(as_user).list_namespaced_pod(namespace).items == []
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(as_user).list_namespaced_pod("default")
    assert refused.value.status == 403
