"""Kubernetes pools against a loopback API server that speaks the real REST API.

To run the same tests against a real cluster, set MAHAVISHNU_TEST_KUBECONFIG to a kubeconfig
(and MAHAVISHNU_TEST_KUBE_CONTEXT to a context): the pools are then configured from it, the
tests that need the loopback server's failure switches are skipped, and the Jobs run the
stock python:3.13-slim image.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pools.errors import PoolUnavailable
from pools.manager import PoolManager
from pools.models import DistributionStrategy, PoolConfig, PoolType, TaskOptions, TaskState
from tests.conftest import make_settings
from tests.helpers.kube_api import FakeKube
from tests.helpers.waiting import wait_until

REAL = os.environ.get("MAHAVISHNU_TEST_KUBECONFIG")
fake_only = pytest.mark.skipif(bool(REAL), reason="needs the loopback API server's failure switches")


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    server = FakeKube(token="kube-token", forbidden=("locked",))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def manager(home: Path) -> AsyncIterator[PoolManager]:
    os.environ["TEST_KUBE_TOKEN"] = "kube-token"
    settings = make_settings(home, k8s_poll_interval_s=0.05, k8s_pending_timeout_s=1.5,
                             enabled_task_types=["analyze", "echo", "python", "shell"])
    async with PoolManager(settings) as m:
        yield m


def cluster(kube: FakeKube, **overrides: object) -> PoolConfig:
    base: dict[str, object] = {"name": "k8s", "type": PoolType.KUBERNETES, "max_workers": 3, "namespace": "tasks"}
    if REAL:
        base.update(kubeconfig=REAL, kube_context=os.environ.get("MAHAVISHNU_TEST_KUBE_CONTEXT"))
    else:
        base.update(endpoint=kube.url, api_token_env="TEST_KUBE_TOKEN")
    base.update(overrides)
    return PoolConfig.model_validate(base)


async def test_a_task_runs_as_a_job(manager: PoolManager, kube: FakeKube) -> None:
    pool = await manager.register(cluster(kube, cpu_request="100m", memory_limit="128Mi"))
    assert pool.status.value == "running" and manager.health("k8s").status == "healthy"
    done = await manager.execute("k8s", "echo", {"items": [1, 2, 3]}, TaskOptions(timeout=60, retries=2))
    assert done.state is TaskState.COMPLETED and done.result == {"echo": {"items": [1, 2, 3]}, "count": 3}
    if REAL:
        return
    assert "tasks" in kube.namespaces  # created on registration
    (job,) = kube.jobs.values()
    name = job["metadata"]["name"]
    assert len(name) <= 63 and name == name.lower() and name.replace("-", "").isalnum()
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 60 and spec["backoffLimit"] == 2 and spec["ttlSecondsAfterFinished"] > 0
    assert job["metadata"]["labels"]["mahavishnu.io/pool"] == pool.pool_id
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "python:3.13-slim" and container["command"][:2] == ["python", "-c"]
    assert container["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}
    assert any(e["name"] == "MAHAVISHNU_TASK" for e in container["env"])


async def test_distribution_over_a_local_and_a_kubernetes_pool(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    await manager.register(PoolConfig(name="local", min_workers=1, max_workers=1))
    out = await manager.distribute("echo", {"items": list(range(40))}, DistributionStrategy.MAP_REDUCE)
    assert out.failed == 0 and out.result["count"] == 40
    assert {s.pool_name for s in out.shards} == {"local", "k8s"}
    if not REAL:
        indexed = [j for j in kube.jobs.values() if j["spec"].get("completionMode") == "Indexed"]
        assert indexed and all(j["spec"]["parallelism"] <= 3 for j in indexed)


async def test_stock_images_run_only_stdlib_types(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    with pytest.raises(PoolUnavailable, match="runs only echo, python, shell"):
        await manager.submit("k8s", "analyze", {"sources": {"a.py": "import os\n"}})
    await manager.register(PoolConfig(name="local", min_workers=1, max_workers=1))
    assert manager.route("analyze").pool_name == "local"  # routing skips the pool that cannot run it


async def test_timeout_and_cancel_stop_the_pod(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    slow = {"argv": ["python", "-c", "import time; time.sleep(60)"]}
    timed = await manager.execute("k8s", "shell", slow, TaskOptions(timeout=1))
    assert timed.state is TaskState.TIMED_OUT and "activeDeadlineSeconds" in (timed.error or "")
    task = await manager.submit("k8s", "shell", slow)
    if not REAL:
        await wait_until(lambda: kube.running_processes() == 1, what="the pod to run")
    cancelled = await manager.cancel(task.task_id)
    assert cancelled.state is TaskState.CANCELLED
    if not REAL:
        await wait_until(lambda: kube.running_processes() == 0, what="the Job's pod to be killed")
        assert ("DELETE", f"/apis/batch/v1/namespaces/tasks/jobs/{cancelled.worker_id.split('/')[-1]}") in \
            kube.requests


async def test_a_failing_pod_reports_the_task_error(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    done = await manager.execute("k8s", "python", {"target": "json:loads", "args": ["{not json"]})
    assert done.state is TaskState.FAILED and (done.error or "").startswith("JSONDecodeError")
    assert not done.pool_fault


@fake_only
async def test_an_image_that_cannot_be_pulled_fails_fast(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube, container_image="registry.example/does-not-exist:1"))
    began = time.monotonic()
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=120))
    assert done.state is TaskState.FAILED and "cannot be pulled: ErrImagePull" in (done.error or "")
    assert time.monotonic() - began < 30 and done.pool_fault


@fake_only
async def test_a_job_that_never_starts_fails_with_the_reason(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube, cpu_request="500"))
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=120))
    assert done.state is TaskState.FAILED
    assert "never started within 1.5s: Unschedulable: 0/1 nodes are available" in (done.error or "")


@fake_only
@pytest.mark.parametrize(("overrides", "message"), [
    ({"endpoint": "http://127.0.0.1:9"}, "cannot reach the Kubernetes API at http://127.0.0.1:9"),
    ({"api_token_env": "NO_SUCH_TOKEN"}, "rejected the credentials (401)"),
    ({"namespace": "locked"}, "forbids creating namespace 'locked' in namespace 'locked' (403)"),
])
async def test_cluster_errors_are_clear_and_fast(manager: PoolManager, kube: FakeKube, overrides: dict[str, str],
                                                 message: str) -> None:
    began = time.monotonic()
    with pytest.raises(PoolUnavailable) as info:
        await manager.register(cluster(kube, **overrides))
    assert message in str(info.value) and time.monotonic() - began < 30
    assert manager.list_pools() == []


@fake_only
async def test_configured_from_a_kubeconfig_and_context(manager: PoolManager, kube: FakeKube, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: loopback
  cluster: {{server: "{kube.url}"}}
users:
- name: tester
  user: {{token: kube-token}}
contexts:
- name: other
  context: {{cluster: loopback, user: nobody}}
- name: loopback
  context: {{cluster: loopback, user: tester, namespace: tasks}}
current-context: other
""")
    await manager.register(PoolConfig(name="kc", type=PoolType.KUBERNETES, kubeconfig=str(config),
                                      kube_context="loopback"))
    done = await manager.execute("kc", "echo", {"items": [9]})
    assert done.state is TaskState.COMPLETED


async def test_workers_are_the_running_pods(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    tasks = [await manager.submit("k8s", "shell", {"argv": ["python", "-c", "import time; time.sleep(30)"]})
             for _ in range(2)]
    await wait_until(lambda: manager.get_pool("k8s").workers == 2, what="two running pods")
    for t in tasks:
        assert (await manager.cancel(t.task_id)).state is TaskState.CANCELLED
    await wait_until(lambda: kube.running_processes() == 0, what="the cancelled pods to stop")


@fake_only
async def test_discovery_registers_a_reachable_cluster(manager: PoolManager, kube: FakeKube, tmp_path: Path) -> None:
    from pools.discovery import discover

    eco = tmp_path / "eco.yaml"
    eco.write_text(f"kubernetes:\n  - name: cloud\n    namespace: batch\n    endpoint: {kube.url}\n"
                   "    api_token_env: TEST_KUBE_TOKEN\n  - name: offline\n    endpoint: http://127.0.0.1:9\n")
    report = await discover(manager, eco, use_file=True, auto_register=True)
    found = {f.name: f for f in report.found}
    assert found["cloud"].healthy and found["cloud"].action == "registered now"
    assert "namespace 'batch' will be created" in found["cloud"].detail
    assert not found["offline"].healthy and "cannot reach the Kubernetes API" in found["offline"].detail
    assert [p.name for p in manager.list_pools()] == ["cloud"]
    done = await manager.execute("cloud", "echo", {"x": 1})
    assert done.state is TaskState.COMPLETED


@fake_only
async def test_warm_mode_runs_tasks_on_a_peer_deployment_behind_a_service(manager: PoolManager,
                                                                         kube: FakeKube) -> None:
    import shutil

    assert shutil.which("mahavishnu"), "the warm Deployment's container runs the installed `mahavishnu`"
    pool = await manager.register(cluster(kube, name="warm", warm=True, min_workers=1, max_workers=4,
                                          cpu_target_percent=60))
    assert pool.status.value == "running" and pool.workers == 3
    objects = {kind: obj for (kind, ns, _), obj in kube.objects.items() if ns == "tasks"}
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["mahavishnu", "peer", "serve"] and "--host" in container["command"]
    assert objects["Service"]["spec"]["ports"][0]["port"] == 8678
    done = await manager.execute("warm", "analyze", {"sources": {"w.py": "import os\n"}})
    assert done.state is TaskState.COMPLETED and done.result["count"] == 1
    assert kube.jobs == {}  # warm tasks are no Jobs: they go to the Service over MCP
    # the HPA scaled the Deployment to 2 replicas: twice the tasks may be in flight
    backend = manager.resolve("warm").backend
    kube.objects[("Deployment", "tasks", objects["Deployment"]["metadata"]["name"])]["status"]["readyReplicas"] = 2
    await wait_until(lambda: backend._warm.slots == 6, what="the pool to follow the replicas")  # type: ignore
    await manager.close_pool("warm")
    assert not [k for k in kube.objects if k[1] == "tasks"]
    await wait_until(lambda: kube.running_processes() == 0, what="the warm peer to stop")


@pytest.mark.parametrize(("task_type", "payload", "expected"), [
    ("echo", {"items": [1, 2]}, {"echo": {"items": [1, 2]}, "count": 2}),
    ("shell", {"argv": ["sh", "-c", "echo out"]}, {"exit_code": 0, "stdout": "out\n", "stderr": "",
                                                   "truncated": False}),
    ("python", {"target": "json:dumps", "args": [[1]]}, {"value": "[1]"}),
])
def test_the_job_runner_works_without_the_package(task_type: str, payload: dict[str, object],
                                                   expected: object) -> None:
    """As in a stock python image: no site-packages (-S), no environment paths (-I)."""
    import json
    import subprocess
    import sys

    from pools.backends.kubernetes import MARKER, RUNNER
    from pools.task_types import TaskTypeRegistry

    env = {"MAHAVISHNU_TASK": json.dumps({"task_type": task_type, "payload": payload}), "PATH": os.environ["PATH"]}
    out = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER], env=env, capture_output=True, text=True,
                         timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1].removeprefix(MARKER))
    assert out.returncode == 0 and result == {"ok": True, "result": expected}, out.stderr
    # the same answer as the task type itself gives in a local worker
    from pools.task_types.base import RunContext

    assert TaskTypeRegistry([task_type]).get(task_type).run(payload, RunContext()) == expected
    refused = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER], capture_output=True, text=True, timeout=60,
                             env={**env, "MAHAVISHNU_TASK": json.dumps({"task_type": "analyze", "payload": {}})})
    assert refused.returncode == 1 and "needs an image with mahavishnu-pools installed" in refused.stdout
