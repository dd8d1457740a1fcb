"""The node agent seen through the API server, as a kubelet would be: container states and exit
codes, restarts, start and config errors, image pulls, deletion, deadlines, volumes, probes and
logs; and what the real controllers make of those statuses (pod failure policy, foreground
deletion, TTL, Deployments)."""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubernetes import client
from tests.helpers.ports import free_port
from tests.k8s.control_plane import KubeCluster
from tests.k8s.node_agent import expand
from tests.k8s.objects import IMAGE, eventually, finished, gone, job, job_pods, pod, pod_when, wait_pod, waiting_reason


def test_a_command_that_cannot_start_is_a_start_error(api: Any, namespace: str) -> None:
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod("nocmd", ["no-such-command-here"]))
    p = wait_pod(api, namespace, "nocmd")
    terminated = p.status.container_statuses[0].state.terminated
    assert (p.status.phase, terminated.reason, terminated.exit_code) == ("Failed", "StartError", 128)
    assert 'exec: "no-such-command-here": executable file not found in $PATH' in terminated.message


def test_an_env_var_over_128_kib_fails_exec_with_e2big(api: Any, namespace: str) -> None:
    env = [{"name": "BIG", "value": "x" * (129 * 1024)}]
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod("big", ["true"], container={"env": env}))
    terminated = wait_pod(api, namespace, "big").status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("StartError", 128)
    assert "argument list too long" in terminated.message


def test_an_image_that_cannot_be_pulled_keeps_the_pod_waiting(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    image = "example.invalid/does-not-exist:1"
    core.create_namespaced_pod(namespace, pod("nopull", ["true"], container={"image": image}))
    p = pod_when(api, namespace, "nopull", lambda p: waiting_reason(p) in ("ErrImagePull", "ImagePullBackOff"),
                 "waiting on its image")
    assert p.status.phase == "Pending"
    with pytest.raises(client.exceptions.ApiException) as refused:
        core.read_namespaced_pod_log("nopull", namespace)
    assert refused.value.status == 400
    message = json.loads(refused.value.body)["message"]
    assert message == 'container "main" in pod "nopull" is waiting to start: image can\'t be pulled'


def test_a_missing_secret_is_a_config_error_until_it_exists(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    core.create_namespaced_pod(namespace, pod("needs", ["python", "-c", "import os; print(os.environ['TOKEN'])"],
                                              container={"env": env}))
    p = pod_when(api, namespace, "needs", lambda p: waiting_reason(p) == "CreateContainerConfigError", "config error")
    assert p.status.container_statuses[0].state.waiting.message == 'secret "later" not found'
    core.create_namespaced_secret(namespace, {"metadata": {"name": "later"}, "stringData": {"token": "t0k"}})
    assert wait_pod(api, namespace, "needs").status.phase == "Succeeded"
    assert core.read_namespaced_pod_log("needs", namespace) == "t0k\n"


def test_run_as_non_root_needs_a_non_root_user(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("asroot", ["true"], securityContext={"runAsNonRoot": True}))
    if os.getuid() == 0:  # the image's user is the agent's
        p = pod_when(api, namespace, "asroot", lambda p: waiting_reason(p) == "CreateContainerConfigError",
                     "config error")
        message = p.status.container_statuses[0].state.waiting.message
        assert "container has runAsNonRoot and image will run as root" in message
    else:
        assert wait_pod(api, namespace, "asroot").status.phase == "Succeeded"
    core.create_namespaced_pod(namespace, pod("asuser", ["true"],
                                              securityContext={"runAsNonRoot": True, "runAsUser": 1000}))
    assert wait_pod(api, namespace, "asuser").status.phase == "Succeeded"


def test_on_failure_restarts_the_container_and_keeps_the_previous_log(api: Any, namespace: str,
                                                                       tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    code = (f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); first = not m.exists(); m.touch(); "
            "print('first' if first else 'second'); sys.exit(1 if first else 0)")
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("again", ["python", "-c", code], restartPolicy="OnFailure"))
    p = wait_pod(api, namespace, "again")
    status = p.status.container_statuses[0]
    assert (p.status.phase, status.restart_count, status.last_state.terminated.exit_code) == ("Succeeded", 1, 1)
    assert core.read_namespaced_pod_log("again", namespace) == "second\n"
    assert core.read_namespaced_pod_log("again", namespace, previous=True) == "first\n"


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
    eventually(lambda: core.read_namespaced_pod_log("sleeper", namespace) == "up\n", "the pod's first line")
    core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=60)
    eventually(lambda: gone(lambda: core.read_namespaced_pod("sleeper", namespace)), "the deleted pod to go")
    assert marker.exists()
    eventually(lambda: f"{namespace}/sleeper" not in kube_cluster.agent_status()["pods"],
               "the agent to see the pod's deletion")


def test_following_a_log_streams_until_the_container_ends(api: Any, namespace: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    code = ("import pathlib, time\n"
            "print('one', flush=True)\n"
            f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
            "print('two')\n")
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("talker", ["python", "-c", code]))
    wait_pod(api, namespace, "talker", ("Running",))
    stream = core.read_namespaced_pod_log("talker", namespace, follow=True, _preload_content=False)
    lines = stream.stream()
    first = b""
    while b"\n" not in first:
        first += next(lines)
    gate.touch()
    rest = b"".join(lines)  # ends when the container does
    assert first + rest == b"one\ntwo\n"


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


def test_init_containers_run_first_and_one_failing_fails_the_pod(api: Any, namespace: str) -> None:
    core = client.CoreV1Api(api)
    shared = [{"name": "e", "mountPath": f"/run/mahavishnu-test-{uuid.uuid4().hex[:8]}"}]
    path = shared[0]["mountPath"] + "/made-by-init"
    init = {"name": "init", "image": IMAGE, "command": ["python", "-c", f"open({path!r}, 'w').write('ready')"],
            "volumeMounts": shared}
    core.create_namespaced_pod(namespace, pod(
        "inited", ["python", "-c", f"print(open({path!r}).read())"], initContainers=[init],
        volumes=[{"name": "e", "emptyDir": {}}], container={"volumeMounts": shared}))
    p = wait_pod(api, namespace, "inited")
    assert p.status.phase == "Succeeded"
    assert p.status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert core.read_namespaced_pod_log("inited", namespace) == "ready\n"

    failing = {"name": "init", "image": IMAGE, "command": ["false"]}
    core.create_namespaced_pod(namespace, pod("uninited", ["true"], initContainers=[failing]))
    p = wait_pod(api, namespace, "uninited")
    assert p.status.phase == "Failed"
    assert p.status.init_container_statuses[0].state.terminated.exit_code == 1
    assert p.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    initialized = next(c for c in p.status.conditions if c.type == "Initialized")
    assert (initialized.status, initialized.reason) == ("False", "ContainersNotInitialized")


def test_a_readiness_probe_makes_the_pod_ready(api: Any, namespace: str) -> None:
    port = free_port()
    probe = {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 1}
    core = client.CoreV1Api(api)
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    core.create_namespaced_pod(namespace, pod(  # the probe, like a kubelet's, goes to the pod's IP
        "web", ["python", "-m", "http.server", str(port), "--bind", "$(POD_IP)"],
        container={"readinessProbe": probe, "ports": [{"name": "web", "containerPort": port}], "env": env}))
    pod_when(api, namespace, "web", lambda p: any(c.type == "Ready" and c.status == "True"
                                                  for c in p.status.conditions or []), "Ready")
    core.delete_namespaced_pod("web", namespace, grace_period_seconds=0)


def test_two_replicas_serve_one_port_on_their_own_pod_ips(api: Any, namespace: str) -> None:
    port = free_port()
    labels = {"app": "web"}
    container = {"name": "web", "image": IMAGE,
                 "command": ["python", "-m", "http.server", str(port), "--bind", "$(POD_IP)"],
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1}}
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})
    eventually(lambda: apps.read_namespaced_deployment_status("web", namespace).status.available_replicas == 2,
               "the Deployment's two replicas to be available")
    ips = sorted(p.status.pod_ip for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items)
    assert len(set(ips)) == 2 and all(ip.startswith("127.") for ip in ips)
    for ip in ips:  # each replica answers on its own loopback address
        with socket.create_connection((ip, port), timeout=30):
            pass
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Foreground")
    eventually(lambda: gone(lambda: apps.read_namespaced_deployment("web", namespace)), "the Deployment to go")
    eventually(lambda: client.CoreV1Api(api).list_namespaced_pod(namespace).items == [], "its pods to go")


def test_a_pod_failure_policy_sees_the_exit_code(api: Any, namespace: str) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    client.BatchV1Api(api).create_namespaced_job(namespace, job("policy", "raise SystemExit(42)", backoffLimit=5,
                                                                podFailurePolicy=policy))
    assert finished(api, namespace, "policy").reason == "PodFailurePolicy"
    assert len(job_pods(api, namespace, "policy")) == 1  # failed at once, no retry


def test_backoff_limit_per_index_fails_only_that_index(api: Any, namespace: str) -> None:
    code = "import os, sys; sys.exit(int(os.environ['JOB_COMPLETION_INDEX']))"
    client.BatchV1Api(api).create_namespaced_job(namespace, job(
        "perindex", code, completionMode="Indexed", completions=2, parallelism=2, backoffLimitPerIndex=0,
        backoffLimit=None))
    assert finished(api, namespace, "perindex").reason == "FailedIndexes"
    status = client.BatchV1Api(api).read_namespaced_job_status("perindex", namespace).status
    assert (status.completed_indexes, status.failed_indexes) == ("0", "1")


def test_foreground_deletion_of_a_job_stops_its_pod_first(api: Any, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    code = ("import signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(143)))\n"
            "print('up', flush=True)\n"
            "while True: time.sleep(1)\n")
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, job("cancel", code))

    def handler_installed() -> bool:  # the pod says so once its SIGTERM handler is in place
        pods = [p for p in job_pods(api, namespace, "cancel") if p.status.phase == "Running"]
        return bool(pods) and core.read_namespaced_pod_log(pods[0].metadata.name, namespace) == "up\n"

    eventually(handler_installed, "a running pod with its handler")
    batch.delete_namespaced_job("cancel", namespace, propagation_policy="Foreground")
    eventually(lambda: gone(lambda: batch.read_namespaced_job("cancel", namespace)), "the Job to go")
    assert marker.exists()
    assert job_pods(api, namespace, "cancel") == []


def test_ttl_after_finished_deletes_the_job(api: Any, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job("brief", "print('done')", ttlSecondsAfterFinished=0))
    eventually(lambda: gone(lambda: batch.read_namespaced_job("brief", namespace)), "the TTL controller")


@pytest.mark.parametrize(("text", "expanded"), [
    ("$(A)-$(B)", "1-$(B)"), ("$$(A)", "$(A)"), ("$$$(A)", "$1"), ("$(A", "$(A"), ("a$", "a$"),
    ("$x$(A)", "$x1"), ("$()", "$()"),
])
def test_env_expansion_follows_the_kubelet(text: str, expanded: str) -> None:
    assert expand(text, {"A": "1"}) == expanded
