"""Kubernetes pools against a loopback API server that follows the real API where it matters
(tests/helpers/kube_api.py: Status messages, watch with bookmarks and 410, the Job controller's
conditions and backoff, the kubelet's env expansion and E2BIG, RBAC, Pod Security).

Every test runs against the loopback server and against the real control plane of tests/k8s
(real API server, Job controller and scheduler; `kube_cluster`, started once per session, each
test in a fresh namespace that enforces the `restricted` Pod Security Standard). With
MAHAVISHNU_TEST_KUBECONFIG (and MAHAVISHNU_TEST_KUBE_CONTEXT) they also run against that
cluster, with the stock python:3.13-slim image. Tests that need the loopback server's switches
(`fake_only`) are skipped on real clusters.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from pools.errors import InvalidInput, PoolUnavailable
from pools.manager import PoolManager
from pools.models import DistributionStrategy, PoolConfig, PoolType, TaskOptions, TaskState
from tests.conftest import make_settings
from tests.helpers.kube_api import FakeKube, restricted_violations
from tests.helpers.waiting import wait_until

REAL = os.environ.get("MAHAVISHNU_TEST_KUBECONFIG")
fake_only = pytest.mark.fake_only  # needs the loopback API server's switches: skipped on real clusters
ROOT = Path(__file__).resolve().parents[1]
RBAC = list(yaml.safe_load_all((ROOT / "kubernetes" / "rbac.yaml").read_text()))
TARGETS = ["loopback", "control-plane", *(["cluster"] if REAL else [])]


def role_rules(*names: str) -> list[dict[str, Any]]:
    return [rule for doc in RBAC if doc["kind"] == "Role" and doc["metadata"]["name"] in names
            for rule in doc["rules"]]


@dataclass
class RealKube:
    """A real API server: the control plane of tests/k8s (real API server, Job controller and
    scheduler), or any cluster named by MAHAVISHNU_TEST_KUBECONFIG. A fresh namespace per test,
    labelled for the `restricted` Pod Security Standard on the control plane."""

    kind: str
    namespace: str
    kubeconfig: Path
    context: str
    cluster: Any = None  # tests.k8s.control_plane.KubeCluster
    cannot_run: str | None = None  # why its pods cannot run our runner, if they cannot

    def need_tasks(self) -> None:
        if self.cannot_run:
            pytest.skip(self.cannot_run)

    def client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig), context=self.context)

    def _listed(self, kind: str) -> list[dict[str, Any]]:
        from kubernetes import client

        with self.client() as api:
            listing = (client.BatchV1Api(api).list_namespaced_job if kind == "jobs" else
                       client.CoreV1Api(api).list_namespaced_pod)(self.namespace)
            return [api.sanitize_for_serialization(item) for item in listing.items]

    def jobs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self._listed("jobs")

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self._listed("pods")

    def delete_job(self, namespace: str, name: str) -> None:
        """`kubectl delete job` (Background propagation, kubectl's default)."""
        from kubernetes import client

        with self.client() as api:
            client.BatchV1Api(api).delete_namespaced_job(name, self.namespace, propagation_policy="Background")


Kube = FakeKube | RealKube
_RUNS_PYTHON: dict[str, str | None] = {}


def why_pods_cannot_run(cluster: Any, namespace: str) -> str | None:
    """Once per session: can a pod under our security context run `python` on this cluster?"""
    if "verdict" in _RUNS_PYTHON:
        return _RUNS_PYTHON["verdict"]
    from kubernetes import client
    from pools.backends.kubernetes.manifests import container_security, pod_security

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(namespace, {"metadata": {"name": "can-python"}, "spec": {
            "restartPolicy": "Never", "securityContext": pod_security(), "containers": [{
                "name": "c", "image": "python:3.13-slim", "command": ["python", "-c", "print('ok')"],
                "securityContext": container_security()}]}})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pod = core.read_namespaced_pod("can-python", namespace)
            if pod.status.phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.1)
        ended = pod.status.container_statuses[0].state.terminated if pod.status.container_statuses else None
        verdict = None if pod.status.phase == "Succeeded" else (
            "the control plane's node cannot run python as a non-root user (runAsUser 65534, as the restricted "
            f"Pod Security Standard needs): {ended.reason if ended else pod.status.phase}: "
            f"{ended.message if ended else ''} (see the note to the control-plane issue)")
        core.delete_namespaced_pod("can-python", namespace)
    _RUNS_PYTHON["verdict"] = verdict
    return verdict


@pytest.fixture(params=TARGETS)
def kube(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kube]:
    """The API server each test runs against: the loopback one, the real control plane, and (with
    MAHAVISHNU_TEST_KUBECONFIG) any cluster."""
    if request.param != "loopback" and request.node.get_closest_marker("fake_only"):
        pytest.skip("needs the loopback API server's switches")
    if request.param == "loopback":
        server = FakeKube(token="kube-token", forbidden=("locked",),
                          rules={"role-token": ("team", role_rules("mahavishnu-tasks")),
                                 "warm-role-token": ("team", role_rules("mahavishnu-tasks", "mahavishnu-warm"))})
        server.start()
        yield server
        server.stop()
        return
    if request.param == "cluster":
        assert REAL is not None
        from kubernetes import client, config

        context = os.environ.get("MAHAVISHNU_TEST_KUBE_CONTEXT") or config.list_kube_config_contexts(REAL)[1]["name"]
        namespace = f"mhv-test-{uuid.uuid4().hex[:8]}"
        with config.new_client_from_config(config_file=REAL, context=context) as api:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        yield RealKube("cluster", namespace, Path(REAL), context)
        with config.new_client_from_config(config_file=REAL, context=context) as api:
            client.CoreV1Api(api).delete_namespace(namespace)
        return
    cluster = request.getfixturevalue("kube_cluster")
    namespace = cluster.create_namespace("mhv", restricted=True)
    yield RealKube("control-plane", namespace, cluster.kubeconfig(), "test", cluster,
                   why_pods_cannot_run(cluster, namespace))


@pytest.fixture(autouse=True)
def kube_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokens the operator's credentials name, in this test's environment only."""
    for name, value in (("TEST_KUBE_TOKEN", "kube-token"), ("TEST_KUBE_WRONG", "not-the-token"),
                        ("TEST_ROLE_TOKEN", "role-token"), ("TEST_WARM_TOKEN", "warm-role-token")):
        monkeypatch.setenv(name, value)


def settings_for(home: Path, kube: Kube, **overrides: object) -> Any:
    base: dict[str, object] = {"k8s_poll_interval_s": 0.05, "k8s_pending_timeout_s": 3.0,
                               "enabled_task_types": ["analyze", "echo", "python", "shell"]}
    if isinstance(kube, RealKube):
        base.update(kubeconfig=kube.kubeconfig, kube_contexts=[kube.context], k8s_pending_timeout_s=30.0)
    else:
        # The operator binds each token to the loopback API server, and nowhere else.
        base["credentials"] = {name: {"env": env, "endpoints": [kube.url]}
                               for name, env in (("kube", "TEST_KUBE_TOKEN"), ("wrong", "TEST_KUBE_WRONG"),
                                                 ("role", "TEST_ROLE_TOKEN"), ("warm", "TEST_WARM_TOKEN"))}
    base.update(overrides)
    return make_settings(home, **base)


@pytest.fixture
async def manager(home: Path, kube: Kube) -> AsyncIterator[PoolManager]:
    async with PoolManager(settings_for(home, kube)) as m:
        yield m


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A file a blocking task waits for, where a pod sees it too: not under /tmp, which is an
    emptyDir inside our pods on a real node."""
    shm = Path("/dev/shm")
    where = Path(tempfile.mkdtemp(prefix="mhv-gate-", dir=shm)) if shm.is_dir() else tmp_path
    yield where / "gate"
    shutil.rmtree(where, ignore_errors=True)


def cluster(kube: Kube, **overrides: object) -> PoolConfig:
    base: dict[str, object] = {"name": "k8s", "type": PoolType.KUBERNETES, "max_workers": 3, "namespace": "tasks"}
    if isinstance(kube, RealKube):
        base.update(kube_context=kube.context, namespace=kube.namespace)
    else:
        base.update(endpoint=kube.url, credential="kube")
    base.update(overrides)
    return PoolConfig.model_validate(base)


def need_tasks(kube: Kube) -> None:
    if isinstance(kube, RealKube):
        kube.need_tasks()


def job_posts(kube: FakeKube) -> int:
    return sum(1 for method, path in kube.requests if method == "POST" and path.endswith("/jobs"))


def gated(gate: Path) -> dict[str, object]:
    """A shell task that runs until the test creates the gate file."""
    return {"argv": ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done"]}


# -- the basics ---------------------------------------------------------------------------------
async def test_a_task_runs_as_a_job(manager: PoolManager, kube: FakeKube) -> None:
    pool = await manager.register(cluster(kube, cpu_request="100m", memory_limit="128Mi"))
    assert pool.status.value == "running" and manager.health("k8s").status == "healthy"
    done = await manager.execute("k8s", "echo", {"items": [1, 2, 3]}, TaskOptions(timeout=60, retries=2))
    assert done.state is TaskState.COMPLETED and done.result == {"echo": {"items": [1, 2, 3]}, "count": 3}
    if isinstance(kube, RealKube):
        return
    assert ("namespaces", "", "tasks") in kube.objects  # created on registration: it did not exist
    (job,) = kube.jobs()
    assert job["metadata"]["name"] == f"mhv-{done.task_id.removeprefix('task_')}-1"  # task id and attempt
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 60 and spec["backoffLimit"] == 2 and spec["ttlSecondsAfterFinished"] > 0
    assert spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    labels = job["metadata"]["labels"]
    assert labels["mahavishnu.io/pool"] == pool.pool_id and labels["app.kubernetes.io/managed-by"] == "mahavishnu"
    assert {labels[f"app.kubernetes.io/{k}"] for k in ("name", "instance", "component")} == {"mahavishnu", "k8s",
                                                                                            "task"}
    pod_spec = spec["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["image"] == "python:3.13-slim"
    assert container["command"] == ["python", "/var/run/mahavishnu/task/runner.py"]  # from the Secret
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}
    assert restricted_violations(pod_spec) == [] and container["securityContext"]["readOnlyRootFilesystem"]
    assert not any("payload" in e.get("value", "") or "items" in e.get("value", "") for e in container["env"])
    assert job["metadata"]["labels"]["mahavishnu.io/task"] == done.task_id.removeprefix("task_")


async def test_distribution_over_a_local_and_a_kubernetes_pool(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    await manager.register(PoolConfig(name="local", min_workers=1, max_workers=1))
    out = await manager.distribute("echo", {"items": list(range(40))}, DistributionStrategy.MAP_REDUCE)
    assert out.failed == 0 and out.result["count"] == 40
    assert {s.pool_name for s in out.shards} == {"local", "k8s"}
    if isinstance(kube, FakeKube):  # the shards a dispatch found queued together share an Indexed Job
        indexed = [j["spec"] for j in kube.jobs() if j["spec"]["completionMode"] == "Indexed"]
        assert indexed and all(s["parallelism"] <= 3 and s["backoffLimitPerIndex"] == 0 and
                               s["template"]["spec"]["activeDeadlineSeconds"] > 0 for s in indexed)


async def test_stock_images_run_only_stdlib_types(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    with pytest.raises(PoolUnavailable, match="runs only echo, python, shell"):
        await manager.submit("k8s", "analyze", {"sources": {"a.py": "import os\n"}})
    await manager.register(PoolConfig(name="local", min_workers=1, max_workers=1))
    assert manager.route("analyze").pool_name == "local"  # routing skips the pool that cannot run it


# -- 1. list and watch ----------------------------------------------------------------------------
@fake_only
async def test_running_jobs_cost_no_requests(manager: PoolManager, kube: FakeKube, gate: Path) -> None:
    """While Jobs run, the pool only listens: the watches stay open and bookmarks keep them fresh."""
    await manager.register(cluster(kube, max_workers=5))
    tasks = [await manager.submit("k8s", "shell", gated(gate)) for _ in range(5)]
    await wait_until(lambda: kube.running_processes() == 5, what="five pods running")
    await wait_until(lambda: all(manager.get_task(t.task_id).state is TaskState.RUNNING for t in tasks),
                     what="the tasks to run")
    # each Secret is handed to its Job off the task's path: wait for those five patches before listening
    await wait_until(lambda: sum(m == "PATCH" and "/secrets/" in p for m, p in kube.requests) == 5,
                     what="each task's Secret handed to its Job")
    before, bookmarks = len(kube.requests), kube.bookmarks
    await wait_until(lambda: kube.bookmarks >= bookmarks + 6, what="three bookmarks on each watch")
    assert kube.requests[before:] == []
    gate.touch()
    for t in tasks:
        assert (await manager.wait(t.task_id, 60)).state is TaskState.COMPLETED
    # per task: Secret, Job, the Secret's owner; the small results came in the pods' status (their
    # termination messages), so not even a log was read; nothing polled
    assert job_posts(kube) == 5 and not [p for _, p in kube.requests if p.endswith("/log")]


@fake_only
async def test_the_watch_lists_again_after_410_gone(manager: PoolManager, kube: FakeKube, gate: Path) -> None:
    await manager.register(cluster(kube))
    task = await manager.submit("k8s", "shell", gated(gate))
    await wait_until(lambda: kube.running_processes() == 1, what="the pod to run")
    backend = manager.resolve("k8s").backend
    relists = backend._jobs.relists  # type: ignore[union-attr]
    kube.compact()
    await wait_until(lambda: backend._jobs.relists > relists, what="a new list after 410")  # type: ignore
    gate.touch()
    done = await manager.wait(task.task_id, 60)
    assert done.state is TaskState.COMPLETED and done.result["stdout"] == "done\n"


@fake_only
async def test_throttling_and_5xx_are_retried(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    kube.throttle(4)
    kube.fail_next(3, 503)
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=60))
    assert done.state is TaskState.COMPLETED
    assert manager.get_pool("k8s").status.value == "running"


@fake_only
async def test_an_outage_degrades_then_fails_the_pool_and_it_recovers(home: Path, kube: FakeKube) -> None:
    async with PoolManager(settings_for(home, kube, k8s_degraded_after_s=0.3, k8s_failed_after_s=1.5)) as manager:
        await manager.register(cluster(kube))
        kube.pause()
        await wait_until(lambda: manager.get_pool("k8s").status.value == "degraded", what="degraded")
        await wait_until(lambda: manager.get_pool("k8s").status.value == "failed", what="failed")
        assert "cannot reach the Kubernetes API" in (manager.get_pool("k8s").status_reason or "")
        kube.resume()
        await wait_until(lambda: manager.get_pool("k8s").status.value == "running", timeout=60, what="recovered")
        done = await manager.execute("k8s", "echo", {"x": 2}, TaskOptions(timeout=60))
        assert done.state is TaskState.COMPLETED


# -- 2. exact Job semantics --------------------------------------------------------------------------
async def test_one_job_per_task_each_with_its_own_outcome(manager: PoolManager, kube: FakeKube) -> None:
    """Submitted in one loop turn, three tasks are three Jobs: a short timeout stays short and a
    failing task does not take its neighbours down."""
    await manager.register(cluster(kube))
    slow, bad, good = await asyncio.gather(
        manager.submit("k8s", "shell", {"argv": ["sleep", "30"]}, TaskOptions(timeout=2)),
        manager.submit("k8s", "python", {"target": "json:loads", "args": ["{bad"]}, TaskOptions(timeout=60)),
        manager.submit("k8s", "echo", {"n": 1}, TaskOptions(timeout=60)))
    began = time.monotonic()
    slow_done = await manager.wait(slow.task_id, 60)
    assert slow_done.state is TaskState.TIMED_OUT and "DeadlineExceeded" in (slow_done.error or "")
    assert time.monotonic() - began < 20  # its own deadline, not a neighbour's
    assert (await manager.wait(bad.task_id, 60)).state is TaskState.FAILED
    assert (await manager.wait(good.task_id, 60)).state is TaskState.COMPLETED
    if isinstance(kube, FakeKube):
        assert sorted(j["spec"]["activeDeadlineSeconds"] for j in kube.jobs()) == [2, 60, 60]


async def test_retries_are_counted_once_per_pod(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    done = await manager.execute("k8s", "python", {"target": "json:loads", "args": ["{bad"]},
                                 TaskOptions(timeout=120, retries=2))
    assert done.state is TaskState.FAILED and done.attempts == 3
    assert (done.error or "").startswith("JSONDecodeError") and "failed 3 times" in (done.error or "")
    assert not done.pool_fault
    if isinstance(kube, FakeKube):
        (job,) = kube.jobs()
        assert job["status"]["failed"] == 3 and len([p for p in kube.pods()]) == 3


async def test_timeout_and_cancel_stop_the_pod(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    slow = {"argv": ["python", "-c", "import time; time.sleep(60)"]}
    timed = await manager.execute("k8s", "shell", slow, TaskOptions(timeout=1))
    assert timed.state is TaskState.TIMED_OUT and "activeDeadlineSeconds" in (timed.error or "")
    task = await manager.submit("k8s", "shell", slow)
    if isinstance(kube, FakeKube):
        await wait_until(lambda: kube.running_processes() == 1, what="the pod to run")
    cancelled = await manager.cancel(task.task_id)
    assert cancelled.state is TaskState.CANCELLED
    if isinstance(kube, FakeKube):
        await wait_until(lambda: kube.running_processes() == 0, what="the Job's pod to be killed")
        name = (cancelled.worker_id or "").split("/")[-1]
        assert ("DELETE", f"/apis/batch/v1/namespaces/tasks/jobs/{name}") in kube.requests


async def test_shards_share_an_indexed_job_and_end_on_their_own(manager: PoolManager, kube: FakeKube) -> None:
    """One distribution's shards: one Indexed Job; a failing shard fails alone, a slow one times out
    at its own deadline, a healthy one completes."""
    await manager.register(cluster(kube))
    options = TaskOptions(timeout=3)
    good, bad, slow = await asyncio.gather(
        manager.submit("k8s", "python", {"target": "json:dumps", "args": ["fine"]}, options, group="dist_1"),
        manager.submit("k8s", "python", {"target": "json:loads", "args": ["{bad"]}, options, group="dist_1"),
        manager.submit("k8s", "python", {"target": "time:sleep", "args": [30]}, options, group="dist_1"))
    assert (await manager.wait(good.task_id, 60)).result == {"value": "\"fine\""}
    bad_done, slow_done = await manager.wait(bad.task_id, 60), await manager.wait(slow.task_id, 60)
    assert bad_done.state is TaskState.FAILED and not bad_done.pool_fault
    assert slow_done.state is TaskState.TIMED_OUT and "DeadlineExceeded" in (slow_done.error or "")
    if isinstance(kube, FakeKube):
        (job,) = kube.jobs()
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
        await wait_until(lambda: any(c["type"] == "Failed" for c in kube.jobs()[0]["status"].get("conditions", [])),
                         what="the Job to end")
        assert kube.jobs()[0]["status"]["completedIndexes"] == "0"


@fake_only
async def test_cancelling_a_shard_stops_only_its_pod(manager: PoolManager, kube: FakeKube, gate: Path) -> None:
    await manager.register(cluster(kube))
    keep, drop = await asyncio.gather(*(manager.submit("k8s", "shell", gated(gate), TaskOptions(timeout=60),
                                                       group="dist_2") for _ in range(2)))
    await wait_until(lambda: kube.running_processes() == 2, what="both shards running")
    await wait_until(lambda: manager.get_task(drop.task_id).state is TaskState.RUNNING, what="running")
    assert (await manager.cancel(drop.task_id)).state is TaskState.CANCELLED
    await wait_until(lambda: kube.running_processes() == 1, what="the cancelled shard's pod to stop")
    gate.touch()
    done = await manager.wait(keep.task_id, 60)
    assert done.state is TaskState.COMPLETED and len(kube.jobs()) == 1
    await wait_until(lambda: kube.jobs()[0]["status"].get("failedIndexes") is not None and
                     "Failed" in [c["type"] for c in kube.jobs()[0]["status"].get("conditions", [])],
                     what="the cancelled index failed by the podFailurePolicy, not retried")
    assert len(kube.pods("tasks")) == 0 or all(p["status"]["phase"] != "Running" for p in kube.pods("tasks"))


@fake_only
async def test_a_disrupted_pod_is_a_pool_fault(manager: PoolManager, kube: FakeKube, gate: Path) -> None:
    await manager.register(cluster(kube))
    task = await manager.submit("k8s", "shell", gated(gate), TaskOptions(timeout=60, retries=3))
    await wait_until(lambda: kube.running_processes() == 1, what="the pod to run")
    await wait_until(lambda: manager.get_task(task.task_id).state is TaskState.RUNNING, what="running")
    (pod,) = kube.pods("tasks")
    kube.disrupt("tasks", pod["metadata"]["name"])
    done = await manager.wait(task.task_id, 60)
    assert done.state is TaskState.FAILED and done.pool_fault
    assert "EvictionByEvictionAPI" in (done.error or "") and job_posts(kube) == 1  # not retried as a task failure


@fake_only
async def test_api_errors_carry_the_status_message(manager: PoolManager, kube: FakeKube) -> None:
    with pytest.raises(PoolUnavailable) as info:
        await manager.register(cluster(kube, namespace="locked"))
    assert 'namespaces "locked" is forbidden: User cannot access it' in str(info.value)
    assert "Forbidden" in str(info.value)


# -- 3. payloads and results ------------------------------------------------------------------------
async def test_payloads_travel_intact_whatever_their_size(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    text = "price is $$5 and $(PYTHONUNBUFFERED) and $(HOME)"
    big = "x" * (300 << 10)  # over the 128 KiB a single env var may hold
    done = await manager.execute("k8s", "echo", {"items": [text, big]}, TaskOptions(timeout=60))
    assert done.state is TaskState.COMPLETED, done.error
    assert done.result["echo"]["items"] == [text, big]


async def test_a_payload_over_the_limit_is_refused_naming_the_field(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    with pytest.raises(InvalidInput) as info:
        await manager.submit("k8s", "echo", {"items": ["y" * (1100 << 10)]})
    assert info.value.field == "payload" and "at most 1,000,000" in info.value.message


@fake_only
async def test_a_container_that_cannot_start_says_why(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube, container_image="registry.example/no-python:1"))
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=60))
    assert done.state is TaskState.FAILED
    assert "StartError" in (done.error or "") and "executable file not found" in (done.error or "")


async def test_an_image_that_cannot_be_pulled_fails_fast(manager: PoolManager, kube: Kube) -> None:
    await manager.register(cluster(kube, container_image="registry.example/does-not-exist:1"))
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=120))
    assert done.state is TaskState.FAILED and "cannot be pulled: ErrImagePull" in (done.error or "")
    assert done.pool_fault
    await wait_until(lambda: not kube.jobs(), what="the stuck Job to be deleted")


async def test_results_outlive_their_job(home: Path, kube: Kube) -> None:
    """The TTL controller deletes a finished Job at once: the result was read before, and the
    next tasks are not disturbed by the 404s."""
    async with PoolManager(settings_for(home, kube, k8s_job_ttl_s=0)) as manager:
        await manager.register(cluster(kube))
        for n in range(3):
            done = await manager.execute("k8s", "echo", {"n": n}, TaskOptions(timeout=60))
            assert done.state is TaskState.COMPLETED and done.result["echo"] == {"n": n}
        if isinstance(kube, FakeKube):
            await wait_until(lambda: not kube.jobs() and not kube.of_kind("secrets", "tasks"),
                             what="the Jobs and their Secrets to be gone")
        else:
            await wait_until(lambda: not kube.jobs(), timeout=60, what="the TTL controller to delete the Jobs")
        assert manager.get_task(done.task_id).result["echo"] == {"n": 2}


async def test_a_job_that_never_starts_fails_with_the_reason(manager: PoolManager, kube: Kube) -> None:
    await manager.register(cluster(kube, cpu_request="500"))
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=120))
    assert done.state is TaskState.FAILED and done.pool_fault
    within = f"{manager.settings.k8s_pending_timeout_s:g}s"
    assert f"never started within {within}: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu" in \
        (done.error or "")


@fake_only
async def test_a_job_that_creates_no_pod_says_why(manager: PoolManager, kube: FakeKube) -> None:
    """The Job controller could not create the pod (a quota, an admission refusal): its event is
    the reason the user reads."""
    kube.add_namespace("tasks")
    kube.pod_quota["tasks"] = 0
    await manager.register(cluster(kube))
    done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=120))
    assert done.state is TaskState.FAILED and done.pool_fault
    assert "never started within 3s: it created no pod: FailedCreate: Error creating: pods" in (done.error or "")
    assert "exceeded quota: pods" in (done.error or "")


# -- 4. adoption and idempotence ---------------------------------------------------------------------
async def test_a_restart_adopts_the_running_job(home: Path, kube: Kube, gate: Path) -> None:
    need_tasks(kube)
    async with PoolManager(settings_for(home, kube)) as first:
        await first.register(cluster(kube))
        task = await first.submit("k8s", "shell", gated(gate))
        await wait_until(lambda: first.get_task(task.task_id).state is TaskState.RUNNING, what="running")
    if isinstance(kube, FakeKube):
        assert kube.running_processes() == 1  # the owner went away; its Job runs on
    async with PoolManager(settings_for(home, kube)) as second:
        gate.touch()
        done = await second.wait(task.task_id, 60)
        assert done.state is TaskState.COMPLETED and done.result["stdout"] == "done\n"
    assert len(kube.jobs("tasks")) == 1  # adopted, never created twice (shell is not idempotent)


async def test_a_job_that_finished_while_no_one_watched_is_read(home: Path, kube: Kube, gate: Path) -> None:
    need_tasks(kube)
    async with PoolManager(settings_for(home, kube)) as first:
        await first.register(cluster(kube))
        task = await first.submit("k8s", "shell", gated(gate))
        await wait_until(lambda: first.get_task(task.task_id).state is TaskState.RUNNING, what="running")
    gate.touch()
    await wait_until(lambda: any(c["type"] == "Complete" for c in kube.jobs("tasks")[0]["status"].get(
        "conditions") or []), timeout=60, what="the Job to complete while no server runs")
    async with PoolManager(settings_for(home, kube)) as second:
        done = await second.wait(task.task_id, 60)
        assert done.state is TaskState.COMPLETED and done.result["stdout"] == "done\n"
    assert len(kube.jobs("tasks")) == 1


def test_api_errors_keep_the_status_message(kube: Kube) -> None:
    """What the API server says is what the user reads (here: an oversized ConfigMap)."""
    from pools.backends.kubernetes import api
    from pools.credentials import KubeAccess

    if isinstance(kube, FakeKube):
        clients = api.connect(cluster(kube), KubeAccess(host=kube.url, token="kube-token"))
        kube.add_namespace("tasks")
    else:
        clients = api.connect(cluster(kube), KubeAccess(kubeconfig=str(kube.kubeconfig), context=kube.context))
    namespace = cluster(kube).namespace
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"x": "y" * (2 << 20)}}
    with pytest.raises(ApiException) as info:
        clients.core.create_namespaced_config_map(namespace, body)
    said = api.explain(info.value, "creating ConfigMap big", "the cluster", namespace).message
    assert "answered 422 Invalid: ConfigMap \"big\" is invalid" in said
    assert "Too long: may not be more than 1048576 bytes" in said
    assert not api.transient(info.value)


async def test_deleted_jobs_do_not_jam_the_pool(manager: PoolManager, kube: Kube, gate: Path) -> None:
    need_tasks(kube)
    await manager.register(cluster(kube))
    doomed, cancelled = [await manager.submit("k8s", "shell", gated(gate)) for _ in range(2)]
    await wait_until(lambda: manager.get_pool("k8s").workers == 2, timeout=60, what="two running pods")
    await wait_until(lambda: manager.get_task(doomed.task_id).state is TaskState.RUNNING, what="running")
    name = (manager.get_task(doomed.task_id).worker_id or "").split("/")[-1]
    kube.delete_job("tasks", name)  # kubectl delete job
    done = await manager.wait(doomed.task_id, 60)
    assert done.state is TaskState.FAILED and "was deleted before it finished" in (done.error or "")
    assert (await manager.cancel(cancelled.task_id)).state is TaskState.CANCELLED
    later = await manager.execute("k8s", "echo", {"after": True}, TaskOptions(timeout=60))
    assert later.state is TaskState.COMPLETED and manager.get_pool("k8s").status.value == "running"


async def test_close_deletes_what_it_owns_and_waits(manager: PoolManager, kube: FakeKube, gate: Path) -> None:
    await manager.register(cluster(kube))
    task = await manager.submit("k8s", "shell", gated(gate))
    await wait_until(lambda: manager.get_task(task.task_id).state is TaskState.RUNNING, what="running")
    await manager.close_pool("k8s")
    assert manager.get_task(task.task_id).state is TaskState.CANCELLED
    if isinstance(kube, FakeKube):
        assert not kube.jobs("tasks") and kube.running_processes() == 0  # gone when close returned


# -- 5. least privilege ------------------------------------------------------------------------------
async def test_the_backend_needs_only_its_role(home: Path, kube: Kube, gate: Path) -> None:
    """Registration, tasks, retries, cancel and shards under a ServiceAccount bound to the Role in
    kubernetes/rbac.yaml and nothing more, in a namespace that exists (and is used as it is)."""
    if isinstance(kube, FakeKube):
        kube.add_namespace("team")
        settings, config = settings_for(home, kube), cluster(kube, namespace="team", credential="role")
    elif kube.cluster is None:
        pytest.skip("needs the control plane to make a ServiceAccount bound to the Role")
    else:
        user = kube.cluster.user_with_role(kube.namespace, ROOT / "kubernetes" / "rbac.yaml",
                                           roles=("mahavishnu-tasks",))
        settings = settings_for(home, kube, kubeconfig=user.kubeconfig)
        config = cluster(kube)
    async with PoolManager(settings) as manager:
        await manager.register(config)
        if isinstance(kube, RealKube):
            kube.need_tasks()
        done = await manager.execute("k8s", "echo", {"x": 1}, TaskOptions(timeout=60))
        assert done.state is TaskState.COMPLETED
        failing = await manager.execute("k8s", "python", {"target": "json:loads", "args": ["{"]},
                                        TaskOptions(timeout=60, retries=1))
        assert failing.state is TaskState.FAILED and failing.attempts == 2
        out = await manager.distribute("echo", {"items": list(range(6))}, DistributionStrategy.MAP_REDUCE)
        assert out.failed == 0 and out.result["count"] == 6
        task = await manager.submit("k8s", "shell", gated(gate))
        await wait_until(lambda: manager.get_task(task.task_id).state is TaskState.RUNNING, what="running")
        assert (await manager.cancel(task.task_id)).state is TaskState.CANCELLED
        name = (manager.get_task(task.task_id).worker_id or "").split("/")[-1]
        await wait_until(lambda: name not in [j["metadata"]["name"] for j in kube.jobs(config.namespace)],
                         timeout=60, what="the Job deleted")
        if isinstance(kube, FakeKube):
            assert not [r for r in kube.requests if r == ("POST", "/api/v1/namespaces")]  # used as it is
        # a namespace the Role does not reach says so, with the API's message
        with pytest.raises(PoolUnavailable, match="cannot list resource \"jobs\" in API group \"batch\""):
            await manager.register(config.model_copy(update={"name": "other", "namespace": "elsewhere"}))


async def test_an_https_api_with_a_private_ca(home: Path, kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API URL with a credential: its ca_file (operator settings) verifies the server."""
    if not isinstance(kube, RealKube) or kube.cluster is None:
        pytest.skip("needs the control plane's https API server and its CA")
    monkeypatch.setenv("TEST_ADMIN_TOKEN", kube.cluster.admin_token)
    credential = {"env": "TEST_ADMIN_TOKEN", "endpoints": [kube.cluster.url]}
    config = PoolConfig(name="direct", type=PoolType.KUBERNETES, namespace=kube.namespace,
                        endpoint=kube.cluster.url, credential="admin")
    async with PoolManager(settings_for(home, kube, credentials={"admin": credential})) as manager:
        with pytest.raises(PoolUnavailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await manager.register(config)
    trusted = {**credential, "ca_file": str(kube.cluster.ca_file)}
    async with PoolManager(settings_for(home, kube, credentials={"admin": trusted})) as manager:
        pool = await manager.register(config)
        assert pool.status.value == "running"
        if not kube.cannot_run:
            done = await manager.execute("direct", "echo", {"over": "https"}, TaskOptions(timeout=60))
            assert done.state is TaskState.COMPLETED and done.result["echo"] == {"over": "https"}


@fake_only
async def test_pods_pass_the_restricted_pod_security_standard(manager: PoolManager, kube: FakeKube) -> None:
    kube.add_namespace("strict", restricted=True)
    await manager.register(cluster(kube, namespace="strict"))
    done = await manager.execute("k8s", "shell", {"argv": ["sh", "-c", "echo ok > $TMPDIR/f && cat $TMPDIR/f"]},
                                 TaskOptions(timeout=60))
    assert done.state is TaskState.COMPLETED and done.result["stdout"] == "ok\n"


def test_the_loopback_server_refuses_what_restricted_refuses() -> None:
    assert any("allowPrivilegeEscalation" in v for v in restricted_violations(
        {"containers": [{"name": "c", "image": "python"}]}))


# -- other clusters and discovery --------------------------------------------------------------------
@fake_only
@pytest.mark.parametrize(("overrides", "message"), [
    ({"endpoint": "http://127.0.0.1:9", "credential": None}, "cannot reach the Kubernetes API at http://127.0.0.1:9"),
    ({"credential": "wrong"}, "rejected the credentials (401)"),
    ({"namespace": "locked"},
     "forbids listing Jobs in namespace 'locked' (403 Forbidden: namespaces \"locked\" is forbidden"),
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
    manager.settings.kubeconfig = config  # the operator's kubeconfig; its "loopback" context is allowed below
    manager.settings.kube_contexts = ["loopback"]
    await manager.register(PoolConfig(name="kc", type=PoolType.KUBERNETES, kube_context="loopback"))
    done = await manager.execute("kc", "echo", {"items": [9]})
    assert done.state is TaskState.COMPLETED


async def test_workers_are_the_running_pods(manager: PoolManager, kube: FakeKube) -> None:
    await manager.register(cluster(kube))
    tasks = [await manager.submit("k8s", "shell", {"argv": ["python", "-c", "import time; time.sleep(30)"]})
             for _ in range(2)]
    await wait_until(lambda: manager.get_pool("k8s").workers == 2, what="two running pods")
    for t in tasks:
        assert (await manager.cancel(t.task_id)).state is TaskState.CANCELLED
    await wait_until(lambda: manager.get_pool("k8s").workers == 0, timeout=60, what="the cancelled pods to stop")
    if isinstance(kube, FakeKube):
        await wait_until(lambda: kube.running_processes() == 0, what="their processes to end")


@fake_only
async def test_discovery_registers_a_reachable_cluster(manager: PoolManager, kube: FakeKube, tmp_path: Path) -> None:
    from pools.discovery import discover

    eco = tmp_path / "eco.yaml"
    eco.write_text(f"kubernetes:\n  - name: cloud\n    namespace: batch\n    endpoint: {kube.url}\n"
                   "    credential: kube\n  - name: offline\n    endpoint: http://127.0.0.1:9\n")
    report = await discover(manager, eco, use_file=True, auto_register=True)
    found = {f.name: f for f in report.found}
    assert found["cloud"].healthy and found["cloud"].action == "registered now"
    assert "namespace 'batch' will be created" in found["cloud"].detail
    assert not found["offline"].healthy and "cannot reach the Kubernetes API" in found["offline"].detail
    assert [p.name for p in manager.list_pools()] == ["cloud"]
    done = await manager.execute("cloud", "echo", {"x": 1})
    assert done.state is TaskState.COMPLETED


# -- 6. warm mode -------------------------------------------------------------------------------------
@fake_only
async def test_warm_mode_runs_tasks_on_a_peer_deployment_behind_a_service(home: Path, kube: FakeKube) -> None:
    async with PoolManager(settings_for(home, kube, k8s_pending_timeout_s=60)) as manager:  # a peer may start slowly
        await warm_mode_runs(manager, kube, "tasks")


@fake_only
async def test_warm_mode_needs_only_its_roles(home: Path, kube: FakeKube) -> None:
    kube.add_namespace("team")
    async with PoolManager(settings_for(home, kube, k8s_pending_timeout_s=60)) as manager:
        await warm_mode_runs(manager, kube, "team", credential="warm")


async def warm_mode_runs(manager: PoolManager, kube: FakeKube, ns: str, **overrides: object) -> None:
    import shutil

    assert shutil.which("mahavishnu"), "the warm Deployment's container runs the installed `mahavishnu`"
    pool = await manager.register(cluster(kube, name="warm", warm=True, min_workers=1, max_workers=4,
                                          cpu_target_percent=60, namespace=ns, **overrides))
    assert pool.status.value == "running" and pool.workers == 3
    objects = {obj["kind"]: obj for plural in ("deployments", "services", "secrets", "horizontalpodautoscalers")
               for obj in kube.of_kind(plural, ns)}
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["mahavishnu", "peer", "serve"] and "--host" in container["command"]
    enabled = next(e["value"] for e in container["env"] if e["name"] == "MAHAVISHNU_ENABLE_TASK_TYPES")
    assert enabled.split(",") == ["analyze", "echo", "python", "shell"]  # the server's enabled types
    assert objects["Service"]["spec"]["ports"][0]["port"] == 8678
    done = await manager.execute("warm", "analyze", {"sources": {"w.py": "import os\n"}})
    assert done.state is TaskState.COMPLETED and done.result["count"] == 1
    assert kube.jobs() == []  # warm tasks are no Jobs: they go to the Service over MCP
    backend = manager.resolve("warm").backend
    kube.set_ready_replicas(ns, objects["Deployment"]["metadata"]["name"], 2)  # as the HPA would
    await wait_until(lambda: backend.warm.peer.slots == 6, what="the pool to follow the replicas")  # type: ignore
    await manager.close_pool("warm")
    assert not [k for k in kube.objects if k[1] == ns and k[0] != "events"]
    await wait_until(lambda: kube.running_processes() == 0, what="the warm peer to stop")


async def warm_backend(home: Path, kube: FakeKube, config: PoolConfig) -> Any:
    """A warm backend that enables only echo, built outside a manager (the API URL and the token the
    operator bound to it come from the manager's check)."""
    from pools.backends.kubernetes import KubernetesBackend

    async with PoolManager(settings_for(home, kube)) as manager:
        access = await manager.kube_access(config)
    return KubernetesBackend("pool_x", config, None, context={}, access=access,  # type: ignore[arg-type]
                             enabled_task_types=["echo"])


@fake_only
async def test_warm_accepts_only_what_the_server_enables(home: Path, kube: FakeKube) -> None:
    config = cluster(kube, warm=True)
    backend = await warm_backend(home, kube, config)
    assert backend.accepts("echo") is None
    assert "run only echo" in (backend.accepts("shell") or "")


@fake_only
async def test_a_failed_warm_up_leaves_nothing_behind(home: Path, kube: FakeKube) -> None:
    async with PoolManager(settings_for(home, kube, k8s_pending_timeout_s=1.0)) as manager:
        with pytest.raises(PoolUnavailable, match="has no ready replica"):
            await manager.register(cluster(kube, name="warm", warm=True,
                                           container_image="registry.example/does-not-exist:1"))
    await wait_until(lambda: not [k for k in kube.objects if k[1] == "tasks" and k[0] not in ("events", "pods")],
                     what="the warm objects to be deleted")


@fake_only
async def test_warm_mode_converges_on_a_changed_image(home: Path, kube: FakeKube) -> None:
    """Applied, not created-or-reused: a second registration's image rolls out."""
    from pools.backends.kubernetes.manifests import warm_deployment
    from pools.backends.kubernetes.warm import APPLY

    config = cluster(kube, warm=True)
    backend = await warm_backend(home, kube, config)
    k = await backend._connect()
    body = warm_deployment(config, "pool_x", ["echo"])
    kube.add_namespace("tasks")
    await asyncio.to_thread(k.apps.patch_namespaced_deployment, body["metadata"]["name"], "tasks", body,
                            field_manager="mahavishnu", force=True, _content_type=APPLY)
    changed = warm_deployment(config.model_copy(update={"container_image": "registry.example/new:2"}), "pool_x",
                              ["echo"])
    out = await asyncio.to_thread(k.apps.patch_namespaced_deployment, body["metadata"]["name"], "tasks", changed,
                                  field_manager="mahavishnu", force=True, _content_type=APPLY)
    assert out.spec.template.spec.containers[0].image == "registry.example/new:2" and out.metadata.generation == 2
    await asyncio.to_thread(k.apps.delete_namespaced_deployment, body["metadata"]["name"], "tasks")


# -- the runner -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("task_type", "payload", "expected"), [
    ("echo", {"items": [1, 2]}, {"echo": {"items": [1, 2]}, "count": 2}),
    ("shell", {"argv": ["sh", "-c", "echo out"]}, {"exit_code": 0, "stdout": "out\n", "stderr": "",
                                                   "truncated": False}),
    ("python", {"target": "json:dumps", "args": [[1]]}, {"value": "[1]"}),
])
def test_the_job_runner_works_without_the_package(task_type: str, payload: dict[str, object],
                                                   expected: object, tmp_path: Path) -> None:
    """As in a stock python image: no site-packages (-S), no environment paths (-I)."""
    import subprocess
    import sys

    from pools.backends.kubernetes import MARKER, RUNNER
    from pools.task_types import TaskTypeRegistry

    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"task_type": task_type, "payload": payload}))
    env = {"MAHAVISHNU_TASK_FILE": str(task_file), "PATH": os.environ["PATH"]}
    out = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER], env=env, capture_output=True, text=True,
                         timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1].removeprefix(MARKER))
    assert out.returncode == 0 and result == {"ok": True, "result": expected}, out.stderr
    # the same answer as the task type itself gives in a local worker
    from pools.task_types.base import RunContext

    assert TaskTypeRegistry([task_type]).get(task_type).run(payload, RunContext()) == expected
    task_file.write_text(json.dumps({"task_type": "analyze", "payload": {}}))
    refused = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER], capture_output=True, text=True, timeout=60,
                             env=env)
    assert refused.returncode == 1 and "needs an image with mahavishnu-pools installed" in refused.stdout
