"""The test control plane itself: real Jobs through the real controllers, our node agent's pods,
logs through the API server, Pod Security and RBAC refusals."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubernetes import client
from tests.helpers.waiting import wait_until_sync
from tests.k8s.control_plane import KubeCluster
from tests.k8s.node_agent import expand

WAIT = 180.0  # generous: the controllers and the agent share a busy machine with the tests
IMAGE = "python:3.13-slim"


@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster) -> Iterator[Any]:
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> str:
    return kube_cluster.create_namespace("cp")


def job(name: str, code: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE, "command": ["python", "-c", code], **spec.pop("container", {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}


def pod(name: str, argv: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": IMAGE, "command": argv, **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def job_condition(api: Any, namespace: str, name: str) -> str | None:
    status = client.BatchV1Api(api).read_namespaced_job_status(name, namespace).status
    for cond in status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return None


def wait_job(api: Any, namespace: str, name: str) -> str:
    result: list[str] = []

    def done() -> bool:
        cond = job_condition(api, namespace, name)
        if cond:
            result.append(cond)
        return cond is not None

    wait_until_sync(done, timeout=WAIT, interval=0.25, what=f"Job {name} to finish")
    return result[0]


def job_pods(api: Any, namespace: str, name: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def wait_pod(api: Any, namespace: str, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed")) -> Any:
    core = client.CoreV1Api(api)
    seen: list[Any] = []

    def reached() -> bool:
        p = core.read_namespaced_pod(name, namespace)
        seen[:] = [p]
        return p.status.phase in phases

    wait_until_sync(reached, timeout=WAIT, interval=0.25, what=f"pod {name} to reach {phases}")
    return seen[0]


def test_a_job_completes_and_its_log_reads_through_the_api_server(api: Any, namespace: str) -> None:
    code = "import os; print('hello', os.environ['GREETING'], os.environ['HOSTNAME'])"
    env = [{"name": "NAME", "value": "world"}, {"name": "GREETING", "value": "$(NAME) costs $$(NAME) $(NOPE)"}]
    client.BatchV1Api(api).create_namespaced_job(namespace, job("hello", code, container={"env": env}))
    assert wait_job(api, namespace, "hello") == "Complete"
    [p] = job_pods(api, namespace, "hello")
    terminated = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, terminated.exit_code, terminated.reason) == ("Succeeded", 0, "Completed")
    log = client.CoreV1Api(api).read_namespaced_pod_log(p.metadata.name, namespace)
    assert log == f"hello world costs $(NAME) $(NOPE) {p.metadata.name}\n"
    tail = client.CoreV1Api(api).read_namespaced_pod_log(p.metadata.name, namespace, tail_lines=1, timestamps=True)
    assert tail.endswith(f" hello world costs $(NAME) $(NOPE) {p.metadata.name}\n") and tail[:4].isdigit()


def test_the_job_controller_counts_a_failing_jobs_pods(api: Any, namespace: str) -> None:
    client.BatchV1Api(api).create_namespaced_job(namespace, job("fails", "raise SystemExit(3)", backoffLimit=1))
    assert wait_job(api, namespace, "fails") == "Failed"
    status = client.BatchV1Api(api).read_namespaced_job_status("fails", namespace).status
    assert status.failed == 2
    assert [c.reason for c in status.conditions if c.type == "Failed"] == ["BackoffLimitExceeded"]
    codes = sorted(p.status.container_statuses[0].state.terminated.exit_code for p in job_pods(api, namespace, "fails"))
    assert codes == [3, 3]


def test_an_indexed_job_gives_each_pod_its_completion_index(api: Any, namespace: str) -> None:
    code = "import os; print('index', os.environ['JOB_COMPLETION_INDEX'])"
    client.BatchV1Api(api).create_namespaced_job(namespace, job(
        "indexed", code, completionMode="Indexed", completions=3, parallelism=3))
    assert wait_job(api, namespace, "indexed") == "Complete"
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


def test_a_command_that_cannot_start_is_a_start_error(api: Any, namespace: str) -> None:
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod("nocmd", ["no-such-command-here"]))
    p = wait_pod(api, namespace, "nocmd")
    terminated = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, terminated.reason, terminated.exit_code) == ("Failed", "StartError", 128)
    assert 'exec: "no-such-command-here": executable file not found in $PATH' in terminated.message


def test_deleting_a_pod_stops_its_process_gracefully(kube_cluster: KubeCluster, api: Any, namespace: str,
                                                      tmp_path: Path) -> None:
    marker = tmp_path / "got-sigterm"
    code = ("import signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
            "print('up', flush=True)\n"
            "while True: time.sleep(1)\n")
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("sleeper", ["python", "-c", code]))
    wait_pod(api, namespace, "sleeper", ("Running",))
    wait_until_sync(lambda: core.read_namespaced_pod_log("sleeper", namespace) == "up\n", timeout=WAIT,
                    what="the pod's first line")
    core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=60)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until_sync(gone, timeout=WAIT, interval=0.25, what="the deleted pod to disappear")
    assert marker.exists()
    assert f"{namespace}/sleeper" not in kube_cluster.agent_status()["pods"]


def test_active_deadline_fails_the_pod_as_a_kubelet_does(api: Any, namespace: str) -> None:
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod(
        "slow", ["python", "-c", "import time; time.sleep(600)"], activeDeadlineSeconds=1))
    p = wait_pod(api, namespace, "slow")
    assert (p.status.phase, p.status.reason) == ("Failed", "DeadlineExceeded")
    assert p.status.message == "Pod was active on the node longer than the specified deadline"


def test_secret_configmap_and_emptydir_volumes_are_mounted(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"token": "sekrit"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a.txt": "from a configmap"}})
    root = f"/run/mahavishnu-test-{uuid.uuid4().hex[:8]}"
    code = (f"import pathlib; r = pathlib.Path({root!r}); (r / 'scratch' / 'x').write_text('ok'); "
            "print((r / 'secret' / 'token').read_text(), (r / 'config' / 'a.txt').read_text(), "
            "(r / 'scratch' / 'x').read_text())")
    volumes = [{"name": "s", "secret": {"secretName": "s"}}, {"name": "c", "configMap": {"name": "c"}},
               {"name": "e", "emptyDir": {}}]
    mounts = [{"name": "s", "mountPath": f"{root}/secret"}, {"name": "c", "mountPath": f"{root}/config"},
              {"name": "e", "mountPath": f"{root}/scratch"}]
    core.create_namespaced_pod(namespace, pod("vols", ["python", "-c", code], volumes=volumes,
                                              container={"volumeMounts": mounts}))
    p = wait_pod(api, namespace, "vols")
    assert p.status.phase == "Succeeded", p.status
    assert core.read_namespaced_pod_log("vols", namespace) == "sekrit from a configmap ok\n"
    assert not Path(root).exists()  # mount points made for the pod are gone with it


def test_a_readiness_probe_makes_the_pod_ready(api: Any, namespace: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 1}
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod(
        "web", ["python", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        container={"readinessProbe": probe, "ports": [{"name": "web", "containerPort": port}]}))

    def ready() -> bool:
        conditions = core.read_namespaced_pod("web", namespace).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_until_sync(ready, timeout=WAIT, interval=0.25, what="the readiness probe to pass")
    core.delete_namespaced_pod("web", namespace, grace_period_seconds=0)


@pytest.mark.parametrize(("text", "expanded"), [
    ("$(A)-$(B)", "1-$(B)"), ("$$(A)", "$(A)"), ("$$$(A)", "$1"), ("$(A", "$(A"), ("a$", "a$"),
    ("$x$(A)", "$x1"), ("$()", "$()"),
])
def test_env_expansion_follows_the_kubelet(text: str, expanded: str) -> None:
    assert expand(text, {"A": "1"}) == expanded
