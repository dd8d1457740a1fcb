"""The node agent: the kubelet's part of the test control plane, running pods as local processes.

It is the only piece of the cluster we write, so it stays small and does what a kubelet does,
seen from the API server:

    API server ──watch pods (spec.nodeName=me)──▶ Agent ──one PodWorker thread per pod uid──┐
        ▲                                          │                                        │
        └── pods/status (strategic merge patch) ◀──┴── launch.py ─exec─▶ container process ◀┘
        └── pods/log ──HTTPS /containerLogs/ns/pod/c──▶ LogServer (reads the CRI-format files)

- registers a Ready Node (InternalIP, allocatable cpu/memory/pods, kubelet port); gives each
  pod its own loopback address as its IP (127.1.x.y; hostNetwork pods get the node's), so
  servers in two pods can bind one port on $(POD_IP) from a status.podIP fieldRef;
- a container is its command+args, run through launch.py with the kubelet's environment:
  envFrom, env (value with $(VAR) expansion and $$ escaping, fieldRef, resourceFieldRef,
  secretKeyRef, configMapKeyRef), then command and args expanded over the whole environment;
  the "image" is this machine: its environment is the agent's PATH/LANG/HOME/PYTHONPATH and
  its working directory is /;
- Secret, ConfigMap, downwardAPI, projected (incl. the service-account token) and emptyDir
  volumes are directories under the pod's directory, bind-mounted at each mountPath in the
  container's own mount namespace (a missing mount point is created and removed afterwards);
- restartPolicy (Never / OnFailure / Always with the kubelet's 10 s doubling back-off),
  activeDeadlineSeconds (Failed, DeadlineExceeded), graceful deletion (SIGTERM to the process
  group, SIGKILL after the grace period, then the pod is deleted with grace 0), HTTP readiness
  probes, the runAsNonRoot check (processes run as the agent's user, whatever runAsUser says);
- images whose name contains "does-not-exist" cannot be pulled (ErrImagePull, ImagePullBackOff).

Init containers run one at a time before the others (initContainerStatuses, Initialized).

Not done (the backend does not use them): sidecar containers (init containers with restartPolicy
Always), liveness and startup probes, exec/tcp probes, resource limits, subPathExpr, service-link
env vars of other services, exec/attach/port-forward, node heartbeats (no node-lifecycle
controller runs, so nothing expects them).

Run: python -m tests.k8s.node_agent CONFIG.json from the repository root (keys: node_api.AgentConfig).
"""


from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.k8s.node_api import AgentConfig, Api, ApiError, log, now, parse_time
from tests.k8s.node_env import ConfigError, MountPoints, Objects, container_env, expand, make_volume
from tests.k8s.node_logs import LogServer

LAUNCHER = Path(__file__).with_name("launch.py")
UNPULLABLE = "does-not-exist"
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0


@dataclass
class Container:
    spec: dict[str, Any]
    log_dir: Path
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    ready: bool = False
    probe_ok: int = 0
    probe_failed: int = 0
    next_probe: float = 0.0
    next_start: float = 0.0
    pump: threading.Thread | None = None
    mounts: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def log_path(self, restarts: int) -> Path:
        return self.log_dir / f"{restarts}.log"

    def running(self) -> bool:
        return "running" in self.state

    def status(self) -> dict[str, Any]:
        # Every state key is sent, absent ones as null: a strategic merge patch would keep a stale one.
        def states(s: dict[str, Any]) -> dict[str, Any]:
            return {k: s.get(k) for k in ("waiting", "running", "terminated")}
        probe = self.spec.get("readinessProbe")
        return {"name": self.name, "image": self.spec.get("image", ""),
                "imageID": f"{self.spec.get('image', '')}@local" if self.container_id else "",
                "containerID": self.container_id or None, "restartCount": self.restarts,
                "started": self.running(), "ready": self.running() and (self.ready if probe else True),
                "state": states(self.state), "lastState": states(self.last_state)}


def kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class PodWorker(threading.Thread):
    """Runs one pod (one uid) to its end, and reports each change of its status."""

    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent, self.pod = agent, pod
        meta = pod["metadata"]
        self.key = (meta["namespace"], meta["name"])
        self.uid = meta["uid"]
        self.dir = Path(agent.config.root) / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.inits = [Container(c, self.dir / "logs" / c["name"]) for c in pod["spec"].get("initContainers", [])]
        self.containers = [Container(c, self.dir / "logs" / c["name"]) for c in pod["spec"]["containers"]]
        for c in self.containers if self.inits else []:
            c.state = {"waiting": {"reason": "PodInitializing"}}
        self.wake = threading.Condition()
        self.deleted = False           # the object is gone from the API server
        self.start_time = pod.get("status", {}).get("startTime") or now()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.volumes_ready = False
        self.pending_message: str | None = None
        self.sent: dict[str, Any] | None = None
        self.transitions: dict[str, tuple[str, str]] = {}
        self.policy = pod["spec"].get("restartPolicy", "Always")
        self.ip = agent.config.address if pod["spec"].get("hostNetwork") else agent.allocate_ip()

    # called from the watch thread
    def update(self, pod: dict[str, Any] | None) -> None:
        with self.wake:
            if pod is None:
                self.deleted = True
            else:
                self.pod = pod
            self.wake.notify_all()

    def poke(self) -> None:
        with self.wake:
            self.wake.notify_all()

    def run(self) -> None:
        try:
            self.loop()
        except Exception:  # noqa: BLE001 - a broken worker must say why in the agent log
            log("pod worker failed", self.key, traceback.format_exc())
        finally:
            self.cleanup()

    def terminating(self) -> bool:
        return self.deleted or bool(self.pod["metadata"].get("deletionTimestamp"))

    def loop(self) -> None:
        self.report()
        while True:
            if self.terminating():
                self.terminate(0 if self.deleted else self.pod["metadata"].get("deletionGracePeriodSeconds", 30))
                if not self.deleted:
                    self.finish_phase()
                    self.report()
                    self.agent.delete_pod(self.pod)
                return
            deadline = self.pod["spec"].get("activeDeadlineSeconds")
            if deadline is not None and time.time() >= parse_time(self.start_time) + deadline:
                self.terminate(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
                self.phase, self.reason = "Failed", "DeadlineExceeded"
                self.message = "Pod was active on the node longer than the specified deadline"
                self.report()
                self.park()
                return
            self.step()
            self.report()
            if self.phase in ("Succeeded", "Failed"):
                self.park()
                return
            with self.wake:
                self.wake.wait(timeout=self.next_wake(deadline))

    def park(self) -> None:
        """A finished pod stays until it is deleted; then the kubelet deletes it with grace 0."""
        while True:
            with self.wake:
                if self.terminating():
                    break
                self.wake.wait(timeout=30)
        if not self.deleted:
            self.agent.delete_pod(self.pod)

    def next_wake(self, deadline: int | None) -> float:
        times = [c.next_start for c in self.all() if c.next_start] + \
                [c.next_probe for c in self.containers if c.next_probe and c.running()]
        if deadline is not None:
            times.append(parse_time(self.start_time) + deadline)
        return max(0.05, min(times) - time.time()) if times else 30.0

    def step(self) -> None:
        if not self.volumes_ready:
            try:
                self.prepare_volumes()
                self.volumes_ready = True
            except (ConfigError, ApiError) as exc:
                self.pending_message = f"MountVolume.SetUp failed: {exc}"
                for c in self.all():
                    c.next_start = time.time() + 2  # the kubelet retries the mount
                return
        if not self.initialized():
            return
        for c in self.containers:
            self.reap(c)
            if not c.running() and c.next_start <= time.time() and self.should_start(c):
                self.start_container(c)
            if c.running() and c.spec.get("readinessProbe") and c.next_probe <= time.time():
                self.probe(c)
        self.update_phase()

    def all(self) -> list[Container]:
        return [*self.inits, *self.containers]

    def initialized(self) -> bool:
        """Run the init containers one at a time, each to success, before the others start."""
        for c in self.inits:
            self.reap(c)
            term = c.state.get("terminated")
            if term is not None and term["exitCode"] == 0:
                continue
            if term is not None and self.policy == "Never":
                self.phase = "Failed"  # an init container that failed for good fails the pod
                for other in self.containers:
                    other.state = {"waiting": {"reason": "PodInitializing"}}
            elif not c.running() and c.next_start <= time.time() and self.should_start(c):
                self.start_container(c)
            return False
        if self.inits and all(c.state.get("waiting", {}).get("reason") == "PodInitializing" for c in self.containers):
            for c in self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating"}}
        return True

    def should_start(self, c: Container) -> bool:
        term = c.state.get("terminated")
        if term is None:
            return True
        if self.policy == "Always" or (self.policy == "OnFailure" and term["exitCode"] != 0):
            c.last_state, c.restarts = c.state, c.restarts + 1
            c.state = {"waiting": {"reason": "CrashLoopBackOff"}}
            return True
        return False

    def start_container(self, c: Container) -> None:
        if self.restart_backoff(c):
            return
        image = c.spec.get("image", "")
        if UNPULLABLE in image:
            again = c.state.get("waiting", {}).get("reason") == "ErrImagePull"
            reason = "ImagePullBackOff" if again else "ErrImagePull"
            c.state = {"waiting": {"reason": reason, "message": f'failed to pull image "{image}": not found'}}
            c.next_start = time.time() + 5
            return
        objects = Objects(self.agent.api, self.key[0])
        try:
            env = container_env(self.view(), c.spec, objects, self.agent.config, self.agent.service_env(self.pod))
            self.check_user(c.spec)
        except (ConfigError, ApiError) as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            c.next_start = time.time() + 2
            return
        argv = [expand(a, env) for a in c.spec.get("command", []) + c.spec.get("args", [])]
        c.next_start = 0.0
        started = now()
        c.container_id = f"agent://{self.uid}-{c.name}-{c.restarts}"
        if not argv:
            self.start_error(c, started, 'unable to start container process: no command specified')
            return
        c.log_dir.mkdir(parents=True, exist_ok=True)
        mounts = self.mounts_for(c)
        spec = {"argv": argv, "env": env, "cwd": c.spec.get("workingDir") or "/", "mounts": mounts}
        spec_r, spec_w = os.pipe()
        err_r, err_w = os.pipe()
        out = open(c.log_path(c.restarts), "ab")  # noqa: SIM115 - handed to the pump thread
        try:
            proc = subprocess.Popen(
                [sys.executable, str(LAUNCHER), "--spec", str(spec_r), "--errors", str(err_w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(spec_r, err_w), start_new_session=True, env={})
        finally:
            os.close(spec_r)
            os.close(err_w)
        with os.fdopen(spec_w, "wb") as w:
            w.write(json.dumps(spec).encode())
        with os.fdopen(err_r, "rb") as r:
            failure = r.read().decode(errors="replace")
        if failure:
            proc.wait()
            out.close()
            self.release_mounts(c)
            self.start_error(c, started, failure)
            return
        c.proc, c.ready, c.probe_ok, c.probe_failed = proc, False, 0, 0
        c.state = {"running": {"startedAt": started}}
        probe = c.spec.get("readinessProbe")
        c.next_probe = time.time() + (probe.get("initialDelaySeconds", 0) if probe else 0)
        c.pump = threading.Thread(target=self.pump, args=(proc, out), daemon=True)
        c.pump.start()
        threading.Thread(target=self.watch_exit, args=(proc,), daemon=True).start()

    def restart_backoff(self, c: Container) -> bool:
        """CrashLoopBackOff: after the first restart, wait 10 s, doubling to 300 s."""
        if c.restarts < 2 or c.state.get("waiting", {}).get("reason") != "CrashLoopBackOff" or c.next_start:
            return False
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (c.restarts - 2))
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {int(delay)}s restarting failed container={c.name} "
                                          f"pod={self.key[1]}_{self.key[0]}({self.uid})"}}
        c.next_start = time.time() + delay
        return True

    def start_error(self, c: Container, started: str, message: str) -> None:
        c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message,
                                  "startedAt": "1970-01-01T00:00:00Z", "finishedAt": started,
                                  "containerID": c.container_id}}
        self.poke()

    def check_user(self, spec: dict[str, Any]) -> None:
        """runAsNonRoot as a kubelet checks it. The process itself runs as the agent's user whatever
        runAsUser says: this machine is the image, and its tools (a Python under /root) need not be
        reachable by another user."""
        ctx = {**(self.pod["spec"].get("securityContext") or {}), **(spec.get("securityContext") or {})}
        uid = ctx.get("runAsUser")
        if ctx.get("runAsNonRoot") and (uid if uid is not None else os.getuid()) == 0:
            raise ConfigError("container has runAsNonRoot and image will run as root "
                              f"(pod: \"{self.key[1]}_{self.key[0]}({self.uid})\", container: {spec['name']})")

    def pump(self, proc: subprocess.Popen[bytes], out: Any) -> None:
        """Write the container's output as CRI log lines: `<RFC3339Nano> stdout F|P <text>`."""
        assert proc.stdout is not None
        with out:
            for line in iter(proc.stdout.readline, b""):
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
                full = line.endswith(b"\n")
                out.write(stamp + (b" stdout F " if full else b" stdout P ") + line + (b"" if full else b"\n"))
                out.flush()
                self.agent.logs_changed()

    def watch_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """When a container's main process ends, the rest of it goes too (as with its pid namespace)."""
        proc.wait()
        kill_group(proc, signal.SIGKILL)
        self.poke()

    def reap(self, c: Container) -> None:
        if c.proc is None or c.proc.poll() is None:
            return
        if c.pump is not None:
            c.pump.join(timeout=30)  # the log is complete before the status says terminated
        code = c.proc.returncode
        exit_code = 128 - code if code < 0 else code  # killed by signal N reads as 128+N
        c.state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                  "startedAt": c.state.get("running", {}).get("startedAt", now()),
                                  "finishedAt": now(), "containerID": c.container_id}}
        c.proc, c.ready, c.next_probe = None, False, 0.0
        self.release_mounts(c)
        self.agent.logs_changed()

    def probe(self, c: Container) -> None:
        spec = c.spec["readinessProbe"]
        c.next_probe = time.time() + spec.get("periodSeconds", 10)
        ok = http_probe(spec, c.spec, self.ip)
        if ok:
            c.probe_ok, c.probe_failed = c.probe_ok + 1, 0
            if c.probe_ok >= spec.get("successThreshold", 1):
                c.ready = True
        else:
            c.probe_ok, c.probe_failed = 0, c.probe_failed + 1
            if c.probe_failed >= spec.get("failureThreshold", 3):
                c.ready = False

    def update_phase(self) -> None:
        states = [c.state for c in self.containers]
        if any("running" in s for s in states):
            self.phase = "Running"
            return
        if all("terminated" in s for s in states):
            codes = [s["terminated"]["exitCode"] for s in states]
            if self.policy == "Never" or (self.policy == "OnFailure" and all(code == 0 for code in codes)):
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                return
        if any(c.restarts or c.last_state for c in self.containers):
            self.phase = "Running"  # restarting containers keep a started pod Running

    def finish_phase(self) -> None:
        """A deleted pod ends terminal: Succeeded only if every container exited 0."""
        if self.phase not in ("Succeeded", "Failed"):
            codes = [c.state.get("terminated", {}).get("exitCode", 137) for c in self.containers]
            self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"

    def terminate(self, grace: int) -> None:
        procs = [c.proc for c in self.all() if c.proc is not None]
        for p in procs:
            kill_group(p, signal.SIGTERM)
        end = time.time() + grace
        with self.wake:
            while any(p.poll() is None for p in procs):
                meta = self.pod["metadata"]
                if meta.get("deletionGracePeriodSeconds") == 0 or self.deleted:
                    end = min(end, time.time())
                if time.time() >= end:
                    break
                self.wake.wait(timeout=end - time.time())
        for p in procs:
            kill_group(p, signal.SIGKILL)
            p.wait()
        for c in self.inits:
            self.reap(c)
        for c in self.containers:
            self.reap(c)
            if "waiting" in c.state:
                c.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                          "message": "The container could not be located when the pod was terminated",
                                          "startedAt": None, "finishedAt": now()}}

    # -- volumes
    def prepare_volumes(self) -> None:
        objects = Objects(self.agent.api, self.key[0])
        for volume in self.pod["spec"].get("volumes", []):
            if "hostPath" not in volume:
                make_volume(volume, self.dir / "volumes" / volume["name"], self.view(), objects, self.agent.api)

    def mounts_for(self, c: Container) -> list[dict[str, Any]]:
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        mounts = []
        for m in c.spec.get("volumeMounts", []):
            volume = volumes[m["name"]]
            source = Path(volume["hostPath"]["path"]) if "hostPath" in volume else self.dir / "volumes" / m["name"]
            if m.get("subPath"):
                source = source / m["subPath"]
            target = Path(m["mountPath"])
            self.agent.mount_points.acquire(target, source.is_dir())
            c.mounts.append(target)
            read_only = m.get("readOnly") or any(k in volume for k in ("secret", "configMap", "downwardAPI",
                                                                        "projected"))
            mounts.append({"source": str(source), "target": str(target), "read_only": bool(read_only)})
        return mounts

    def release_mounts(self, c: Container) -> None:
        for target in c.mounts:
            self.agent.mount_points.release(target)
        c.mounts = []

    def cleanup(self) -> None:
        for c in self.all():
            if c.proc is not None:
                kill_group(c.proc, signal.SIGKILL)
                c.proc.wait()
            self.release_mounts(c)

    # -- status
    def conditions(self) -> list[dict[str, Any]]:
        """The kubelet's pod conditions (pkg/kubelet/status/generate.go), PodScheduled aside."""
        terminal = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(self.phase)
        unready = [c.name for c in self.containers if not c.status()["ready"]]
        if terminal:
            ready, reason, message = "False", terminal, None
        elif unready:
            ready, reason = "False", "ContainersNotReady"
            message = f"containers with unready status: [{' '.join(unready)}]"
        else:
            ready, reason, message = "True", None, None
        incomplete = [c.name for c in self.inits if c.state.get("terminated", {}).get("exitCode") != 0]
        started = any(c.restarts or "waiting" not in c.state for c in self.containers)
        if self.phase == "Succeeded" or not incomplete or started:
            initialized = {"status": "True", "reason": "PodCompleted" if self.phase == "Succeeded" else None,
                           "message": None}
        else:
            initialized = {"status": "False", "reason": "ContainersNotInitialized",
                           "message": f"containers with incomplete status: [{' '.join(incomplete)}]"}
        return [{"type": "PodReadyToStartContainers", "status": "False" if terminal else "True"},
                {"type": "Initialized", **initialized},
                {"type": "Ready", "status": ready, "reason": reason, "message": message},
                {"type": "ContainersReady", "status": ready, "reason": reason, "message": message}]

    def addresses(self) -> dict[str, Any]:
        host = self.agent.config.address
        return {"hostIP": host, "hostIPs": [{"ip": host}], "podIP": self.ip, "podIPs": [{"ip": self.ip}]}

    def view(self) -> dict[str, Any]:
        """The pod with the addresses this agent gave it, for fieldRefs read before the API has them."""
        return {**self.pod, "status": {**self.pod.get("status", {}), **self.addresses()}}

    def report(self) -> None:
        status: dict[str, Any] = {
            "phase": self.phase, "reason": self.reason, "message": self.message or self.pending_message,
            **self.addresses(),
            "startTime": self.start_time,
            "conditions": self.conditions(), "containerStatuses": [c.status() for c in self.containers]}
        if self.inits:
            status["initContainerStatuses"] = [
                {**c.status(), "ready": c.state.get("terminated", {}).get("exitCode") == 0} for c in self.inits]
        if status == self.sent or self.deleted:
            return
        sent = json.loads(json.dumps(status))
        for cond in status["conditions"]:
            before = self.transitions.get(cond["type"])
            if before is None or before[0] != cond["status"]:
                self.transitions[cond["type"]] = before = (cond["status"], now())
            cond["lastTransitionTime"], cond["lastProbeTime"] = before[1], None
        patch = {"metadata": {"uid": self.uid}, "status": status}
        try:
            self.agent.api.request("PATCH", f"/api/v1/namespaces/{self.key[0]}/pods/{self.key[1]}/status", patch,
                                   "application/strategic-merge-patch+json")
            self.sent = sent
        except ApiError as exc:
            if exc.code in (404, 409):
                return  # the pod is gone, or was replaced by one with the same name
            log("status update failed", self.key, exc)


def http_probe(probe: dict[str, Any], container: dict[str, Any], address: str) -> bool:
    get = probe.get("httpGet")
    if get is None:
        return True  # exec and tcp probes are not run: they count as passing
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), 0)
    cls = http.client.HTTPSConnection if get.get("scheme") == "HTTPS" else http.client.HTTPConnection
    kwargs: dict[str, Any] = {"context": ssl._create_unverified_context()} if cls is http.client.HTTPSConnection else {}
    conn = cls(get.get("host") or address, int(port), timeout=probe.get("timeoutSeconds", 1), **kwargs)
    try:
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        conn.request("GET", get.get("path", "/"), headers={"User-Agent": "kube-probe/1.37", **headers})
        return 200 <= conn.getresponse().status < 400
    except OSError:
        return False
    finally:
        conn.close()


# -- logs -------------------------------------------------------------------------------------------


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.api = Api(config.api, config.token, config.ca_file)
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.RLock()  # PodWorker() takes it again for an address
        self.log_cond = threading.Condition()
        self.mount_points = MountPoints()
        self.master_env: dict[str, str] | None = None
        self.ips = 0

    def register(self) -> None:
        c = self.config
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": c.node_name, "labels": {"kubernetes.io/hostname": c.node_name,
                                                              "kubernetes.io/os": "linux",
                                                              "kubernetes.io/arch": "amd64"}}}
        try:
            self.api.request("POST", "/api/v1/nodes", node)
        except ApiError as exc:
            if exc.code != 409:
                raise
        t = now()
        resources = {"cpu": c.cpu, "memory": c.memory, "pods": c.pods, "ephemeral-storage": "100Gi"}
        conditions = [{"type": kind, "status": "False", "reason": f"KubeletHas{reason}", "message": message,
                       "lastHeartbeatTime": t, "lastTransitionTime": t}
                      for kind, reason, message in (
                          ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                          ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                          ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "kubelet is posting ready status", "lastHeartbeatTime": t,
                           "lastTransitionTime": t})
        status = {"capacity": resources, "allocatable": resources, "conditions": conditions,
                  "addresses": [{"type": "InternalIP", "address": c.address},
                                {"type": "Hostname", "address": c.node_name}],
                  "daemonEndpoints": {"kubeletEndpoint": {"Port": c.port}},
                  "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                               "osImage": "mahavishnu node agent", "containerRuntimeVersion": "agent://1",
                               "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux",
                               "architecture": "amd64"}}
        self.api.request("PATCH", f"/api/v1/nodes/{c.node_name}/status", {"status": status},
                         "application/strategic-merge-patch+json")

    def allocate_ip(self) -> str:
        """Each pod its own loopback address (127.1.0.0/16), so servers in pods can bind the same port."""
        with self.lock:
            self.ips = self.ips % 65533 + 1
            return f"127.1.{self.ips // 256}.{self.ips % 256}"

    def service_env(self, pod: dict[str, Any]) -> dict[str, str]:
        """KUBERNETES_SERVICE_HOST and friends, which a kubelet gives every container."""
        if self.master_env is None:
            svc = self.api.request("GET", "/api/v1/namespaces/default/services/kubernetes")
            ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
            self.master_env = {"KUBERNETES_SERVICE_HOST": ip, "KUBERNETES_SERVICE_PORT": str(port),
                               "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                               "KUBERNETES_PORT": f"tcp://{ip}:{port}",
                               f"KUBERNETES_PORT_{port}_TCP": f"tcp://{ip}:{port}",
                               f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
                               f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
                               f"KUBERNETES_PORT_{port}_TCP_ADDR": ip}
        return dict(self.master_env)

    # -- pods
    def watch_pods(self) -> None:
        """List, then watch from the list's resourceVersion; relist when the watch ends (as informers do)."""
        selector = urllib.parse.quote(f"spec.nodeName={self.config.node_name}")
        while True:
            try:
                listing = self.api.request("GET", f"/api/v1/pods?fieldSelector={selector}")
                seen = {pod["metadata"]["uid"] for pod in listing["items"]}
                with self.lock:
                    gone = [self.workers.pop(uid) for uid in list(self.workers) if uid not in seen]
                for w in gone:
                    w.update(None)
                for pod in listing["items"]:
                    self.pod_event("ADDED", pod)
                rv = listing["metadata"]["resourceVersion"]
                for event in self.api.watch(f"/api/v1/pods?fieldSelector={selector}&watch=1&resourceVersion={rv}"
                                            "&allowWatchBookmarks=true&timeoutSeconds=300"):
                    if event["type"] == "ERROR":
                        break  # 410 Gone: relist
                    if event["type"] != "BOOKMARK":
                        self.pod_event(event["type"], event["object"])
            except Exception:  # noqa: BLE001 - the agent outlives an API server hiccup, and says so
                log("pod watch failed, relisting:", traceback.format_exc())
                time.sleep(1)

    def pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.pop(uid, None) if kind == "DELETED" else self.workers.get(uid)
            if worker is None and kind != "DELETED" and pod.get("status", {}).get("phase") not in ("Succeeded",
                                                                                                    "Failed"):
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
                return
        if worker is not None:
            worker.update(None if kind == "DELETED" else pod)
        elif kind != "DELETED" and pod["metadata"].get("deletionTimestamp"):
            self.delete_pod(pod)  # a finished pod from before this agent started

    def delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except ApiError as exc:
            if exc.code not in (404, 409):
                log("pod delete failed", meta["name"], exc)

    def workers_snapshot(self) -> list[PodWorker]:
        with self.lock:
            return list(self.workers.values())

    def worker_for(self, namespace: str, name: str) -> PodWorker | None:
        matches = [w for w in self.workers_snapshot() if w.key == (namespace, name)]
        return matches[-1] if matches else None

    # -- log followers wait here for new output
    def logs_changed(self) -> None:
        with self.log_cond:
            self.log_cond.notify_all()

    def wait_logs(self) -> None:
        with self.log_cond:
            self.log_cond.wait(timeout=1)

    def run(self) -> None:
        Path(self.config.root).mkdir(parents=True, exist_ok=True)
        server = LogServer(self)
        threading.Thread(target=server.serve_forever, daemon=True, name="logs").start()
        self.register()
        log("node", self.config.node_name, "registered; kubelet port", self.config.port)
        self.watch_pods()


def main() -> None:
    agent = Agent(AgentConfig.load(sys.argv[1]))

    def stop(signum: int, _frame: object) -> None:
        for w in agent.workers_snapshot():
            w.cleanup()
        agent.mount_points.release_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()


if __name__ == "__main__":
    main()
