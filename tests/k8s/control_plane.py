"""A real Kubernetes control plane for the tests, started once per pytest session.

etcd (Debian's etcd-server) and kube-apiserver, kube-controller-manager and kube-scheduler built
from k8s.io/kubernetes by tests/k8s/build.sh (the release in tests/k8s/VERSION), plus our node
agent (tests/k8s/node_agent.py) as the one Node, which runs pods as local processes. Everything
listens on 127.0.0.1 at free ports; state lives in temporary directories (etcd's on /dev/shm).

    etcd ◀── kube-apiserver (TLS, static tokens, Node+RBAC, PodSecurity, NodeRestriction)
                 ▲        ▲          ▲                  │ pods/log: HTTPS to the node's InternalIP
    controller-manager  scheduler  node agent ◀─────────┘ (verified with --kubelet-certificate-authority)

Fixture API (`kube_cluster`, session scope, registered in tests/conftest.py; any test may ask
for it):

    kube_cluster.url             "https://127.0.0.1:PORT"
    kube_cluster.ca_file         Path of the CA the API server's certificate is signed by
    kube_cluster.admin_token     bearer token of an admin (group system:masters)
    kube_cluster.version         "v1.37.2"
    kube_cluster.node_name       the one Node (allocatable: cpu 4, memory 8Gi, 110 pods)
    kube_cluster.kubeconfig(token=None, namespace=None, path=None) -> Path
                                 a kubeconfig file (admin token unless given), current context set
    kube_cluster.api_client(token=None) -> kubernetes.client.ApiClient   (the official client)
    kube_cluster.create_namespace(prefix="t", restricted=False) -> str
                                 a fresh namespace, `restricted` labels it for Pod Security
                                 enforcement; returns once its default ServiceAccount exists
    kube_cluster.user_with_role(namespace, role_yaml, name="mahavishnu", roles=None) -> KubeUser
                                 a ServiceAccount bound (RoleBinding) to every Role/ClusterRole in
                                 role_yaml (a Path or YAML text; other kinds are ignored; `roles`
                                 picks some by name) and nothing else; KubeUser has name,
                                 namespace, token (a 24 h TokenRequest token) and kubeconfig
                                 (with the namespace as its context's)
    kube_cluster.agent_status() -> {"alive": bool, "healthz": str, "pods": ["ns/name", ...]}
    kube_cluster.check()         raises with the log tail of any component that has exited
    kube_cluster.rss() -> dict   resident memory of each component, bytes
    kube_cluster.logs            directory of the components' logs

How the node agent behaves is in tests/k8s/node_agent.py: a kubelet's statuses, logs, env
expansion, volumes (bind mounts in a private mount namespace: the agent must be root), probes;
every image is this machine and its processes run as the agent's user whatever runAsUser says;
each pod gets its own loopback IP (127.1.x.y); an image name containing "does-not-exist" cannot
be pulled.

When the binaries are not built the fixture skips with the command that builds them; on CI
(`CI` set) it fails instead, because .ci/setup builds them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until_sync
from tests.k8s import pki

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VERSION = (HERE / "VERSION").read_text().strip()
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
START_TIMEOUT = 240.0  # a busy 2-core CI machine; a quiet one is ready in seconds
# The controllers the backend relies on: Jobs, TTL, garbage collection, namespaces, service
# accounts, warm mode's Deployments/ReplicaSets/HPA, and what pods and RBAC roles need.
CONTROLLERS = ("job-controller", "ttl-after-finished-controller", "garbage-collector-controller",
               "namespace-controller", "serviceaccount-controller", "root-ca-certificate-publisher-controller",
               "deployment-controller", "replicaset-controller", "horizontal-pod-autoscaler-controller",
               "pod-garbage-collector-controller", "clusterrole-aggregation-controller",
               "endpointslice-controller")


def binaries_dir() -> Path:
    override = os.environ.get("MAHAVISHNU_K8S_BIN")
    if override:
        return Path(override)
    root = Path(os.environ.get("MAHAVISHNU_K8S_CACHE", Path.home() / ".cache" / "mahavishnu" / "k8s"))
    return root / VERSION


def missing_reason() -> str | None:
    directory = binaries_dir()
    missing = [b for b in BINARIES if not (directory / b).is_file()]
    if missing:
        return (f"Kubernetes {VERSION} control plane not built ({', '.join(missing)} missing in {directory}): "
                "run tests/k8s/build.sh (.ci/setup does)")
    if shutil.which("etcd") is None:
        return "etcd not installed: apt-get install etcd-server (.ci/setup does)"
    return None


@dataclass
class KubeUser:
    name: str
    namespace: str
    token: str
    kubeconfig: Path


class KubeCluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.logs = base / "logs"
        self.pki = base / "pki"
        self.version = VERSION
        self.node_name = "agent-node"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = self.pki / "ca.crt"
        self.admin_token = uuid.uuid4().hex
        self.tokens = {name: uuid.uuid4().hex for name in ("controller-manager", "scheduler", "node")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.agent_port = free_port()
        self.etcd_dir = Path(tempfile.mkdtemp(prefix="mahavishnu-etcd-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                              else None))
        self.started_at = 0.0
        self.ready_after = 0.0

    # -- lifecycle
    def start(self) -> None:
        self.started_at = time.monotonic()
        self.logs.mkdir(parents=True)
        pki.write_all(self.pki, self.node_name)
        self.write_tokens()
        etcd_port, peer_port = free_port(), free_port()
        self.spawn("etcd", ["etcd", "--name", "default", "--data-dir", str(self.etcd_dir / "data"),
                            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}"])
        self.wait(lambda: self.http_ok(f"http://127.0.0.1:{etcd_port}/health"), "etcd to be healthy")
        p = self.pki
        self.spawn("kube-apiserver", [
            self.binary("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.base / 'apiserver-certs'}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}", f"--token-auth-file={self.base / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            # Without the node-lifecycle controller nothing would lift the not-ready taint this adds.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=InternalIP", f"--kubelet-certificate-authority={p / 'ca.crt'}",
            f"--kubelet-client-certificate={p / 'kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'kubelet-client.key'}",
            "--profiling=false", "--v=1"])
        self.wait(self.api_ready, "kube-apiserver to be ready")
        self.spawn("kube-controller-manager", [
            self.binary("kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig(self.tokens['controller-manager'])}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            "--use-service-account-credentials", f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            "--profiling=false", "--v=1"])
        self.spawn("kube-scheduler", [
            self.binary("kube-scheduler"), f"--kubeconfig={self.kubeconfig(self.tokens['scheduler'])}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            "--profiling=false", "--v=1"])
        self.spawn("node-agent", [sys.executable, "-m", "tests.k8s.node_agent", str(self.write_agent_config())],
                   cwd=REPO)
        self.wait(self.node_ready, "the node agent's Node to be Ready")
        self.wait(lambda: self.exists("/api/v1/namespaces/default/serviceaccounts/default"),
                  "the controller manager to create the default ServiceAccount")
        self.ready_after = time.monotonic() - self.started_at

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        shutil.rmtree(self.etcd_dir, ignore_errors=True)

    def spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True, cwd=cwd or self.base)

    def binary(self, name: str) -> str:
        return str(binaries_dir() / name)

    def wait(self, condition: Any, what: str) -> None:
        def ready() -> bool:
            self.check()
            return bool(condition())
        wait_until_sync(ready, timeout=START_TIMEOUT, what=what, interval=0.1)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; its log ends:\n{tail}")

    # -- files
    def write_tokens(self) -> None:
        rows = [f'{self.admin_token},admin,admin,"system:masters"',
                f"{self.tokens['controller-manager']},system:kube-controller-manager,kcm",
                f"{self.tokens['scheduler']},system:kube-scheduler,scheduler",
                f'{self.tokens["node"]},system:node:{self.node_name},node,"system:nodes"']
        (self.base / "tokens.csv").write_text("\n".join(rows) + "\n")

    def write_agent_config(self) -> Path:
        image_env = {k: os.environ[k] for k in ("PATH", "LANG", "HOME", "PYTHONPATH") if k in os.environ}
        config = {"api": self.url, "token": self.tokens["node"], "ca_file": str(self.ca_file),
                  "cert_file": str(self.pki / "node.crt"), "key_file": str(self.pki / "node.key"),
                  "node_name": self.node_name, "address": "127.0.0.1", "port": self.agent_port,
                  "root": str(self.base / "node"), "env": image_env}
        path = self.base / "node-agent.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def kubeconfig(self, token: str | None = None, namespace: str | None = None, path: Path | None = None) -> Path:
        token = token or self.admin_token
        path = path or self.base / "kubeconfigs" / f"{uuid.uuid4().hex[:12]}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        context: dict[str, Any] = {"cluster": "test", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
                  "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                            "certificate-authority": str(self.ca_file)}}],
                  "users": [{"name": "user", "user": {"token": token}}],
                  "contexts": [{"name": "test", "context": context}]}
        path.write_text(yaml.safe_dump(config))
        return path

    # -- the API, for the fixture's own checks
    def get(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.admin_token}"})
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=30) as resp:
                body = resp.read()
                return resp.status, json.loads(body) if body[:1] == b"{" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, None

    def api_ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def exists(self, path: str) -> bool:
        return self.get(path)[0] == 200

    def node_ready(self) -> bool:
        code, node = self.get(f"/api/v1/nodes/{self.node_name}")
        if code != 200:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    @staticmethod
    def http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    # -- helpers for tests
    def api_client(self, token: str | None = None) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig(token)))

    def create_namespace(self, prefix: str = "t", restricted: bool = False) -> str:
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if restricted else {}
        with self.api_client() as api:
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
                name=name, labels=labels)))
        self.wait(lambda: self.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                  f"namespace {name}'s default ServiceAccount")
        return name

    def user_with_role(self, namespace: str, role_yaml: str | Path, name: str = "mahavishnu",
                       roles: tuple[str, ...] | None = None) -> KubeUser:
        from kubernetes import client

        text = Path(role_yaml).read_text() if isinstance(role_yaml, Path) else role_yaml
        found = [d for d in yaml.safe_load_all(text) if d and d.get("kind") in ("Role", "ClusterRole")]
        if roles is not None:
            found = [d for d in found if d["metadata"]["name"] in roles]
        if not found:
            raise ValueError(f"role_yaml holds no Role or ClusterRole{f' named {roles}' if roles else ''}")
        with self.api_client() as api:
            core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
            for role in found:
                role_name = role["metadata"]["name"]
                if role["kind"] == "Role":
                    role["metadata"]["namespace"] = namespace
                    rbac.create_namespaced_role(namespace, role)
                elif not self.exists(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role_name}"):
                    rbac.create_cluster_role(role)
                rbac.create_namespaced_role_binding(namespace, {
                    "metadata": {"name": f"{name}-{role_name}"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"], "name": role_name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
            token = core.create_namespaced_service_account_token(name, namespace, {
                "spec": {"audiences": None, "expirationSeconds": 86400}}).status.token
        return KubeUser(name=name, namespace=namespace, token=token,
                        kubeconfig=self.kubeconfig(token, namespace=namespace))

    def agent_status(self) -> dict[str, Any]:
        proc = self.procs.get("node-agent")
        alive = proc is not None and proc.poll() is None
        status: dict[str, Any] = {"alive": alive, "healthz": "", "pods": []}
        if alive:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            ctx.load_cert_chain(self.pki / "kubelet-client.crt", self.pki / "kubelet-client.key")
            base = f"https://127.0.0.1:{self.agent_port}"
            with urllib.request.urlopen(base + "/healthz", context=ctx, timeout=10) as resp:
                status["healthz"] = resp.read().decode()
            with urllib.request.urlopen(base + "/pods", context=ctx, timeout=10) as resp:
                pods = json.loads(resp.read())["items"]
            status["pods"] = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods]
        return status

    def rss(self) -> dict[str, int]:
        import psutil

        out = {}
        for name, proc in self.procs.items():
            try:
                out[name] = psutil.Process(proc.pid).memory_info().rss
            except psutil.NoSuchProcess:
                out[name] = 0
        return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the cluster may be the one that starts it: give it room beyond the default timeout."""
    for item in items:
        if "kube_cluster" in getattr(item, "fixturenames", ()) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(START_TIMEOUT * 2 + 120))


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must build it")
        pytest.skip(reason)
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"))
    try:
        cluster.start()
        yield cluster
        cluster.check()  # a component that died during the session is an error, with its log
    finally:
        cluster.stop()


def main() -> None:
    """`python -m tests.k8s.control_plane`: run the cluster by hand until Ctrl-C (prints a kubeconfig)."""
    reason = missing_reason()
    if reason is not None:
        sys.exit(reason)
    cluster = KubeCluster(Path(tempfile.mkdtemp(prefix="mahavishnu-kube-")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        cluster.start()
        rss = {name: round(value / 2**20) for name, value in cluster.rss().items()}
        print(json.dumps({"kubeconfig": str(cluster.kubeconfig()), "ready_after_s": round(cluster.ready_after, 1),
                          "rss_mib": rss, "rss_total_mib": sum(rss.values()), "logs": str(cluster.logs)}), flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
