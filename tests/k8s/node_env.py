"""What a kubelet prepares before a container starts: its environment (with $(VAR) expansion)
and its volumes (directories under the pod's directory, bind-mounted by launch.py)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from tests.k8s.node_api import AgentConfig, Api, ApiError


def expand(text: str, lookup: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: $$ is a literal $, an unknown $(VAR) stays as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:end]
                out.append(lookup.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def field_value(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    if path.startswith(("metadata.labels['", "metadata.annotations['")):
        section, key = path.split("['", 1)
        return str(meta.get(section.split(".")[1], {}).get(key[:-2], ""))
    simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
              "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
              "status.hostIP": status.get("hostIP", ""), "status.podIP": status.get("podIP", ""),
              "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs", [])),
              "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", []))}
    if path in ("metadata.labels", "metadata.annotations"):
        return "\n".join(f'{k}="{v}"' for k, v in sorted(meta.get(path.split(".")[1], {}).items()))
    return str(simple.get(path, ""))


class ConfigError(Exception):
    """CreateContainerConfigError: a referenced Secret/ConfigMap (or key) is missing."""


class Objects:
    """Reads Secrets and ConfigMaps a pod refers to (what the Node authorizer lets a node read)."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        if (kind, name) not in self.cache:
            try:
                obj = self.api.request("GET", f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
            except ApiError as exc:
                if exc.code != 404:
                    raise
                obj = None
            self.cache[(kind, name)] = obj
        return self.cache[(kind, name)]

    def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = self.get(kind, name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{"secret" if kind == "secrets" else "configmap"} "{name}" not found')
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        out = {k: v.encode() for k, v in obj.get("data", {}).items()}
        out.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
        return out

    def key(self, kind: str, ref: dict[str, Any]) -> str | None:
        data = self.data(kind, ref["name"], bool(ref.get("optional")))
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            label = "Secret" if kind == "secrets" else "ConfigMap"
            raise ConfigError(f"couldn't find key {ref['key']} in {label} {self.namespace}/{ref['name']}")
        return data[ref["key"]].decode()


def resource_value(container: dict[str, Any], ref: dict[str, Any], node: AgentConfig) -> str:
    section, _, name = ref["resource"].partition(".")
    raw = container.get("resources", {}).get(section, {}).get(name)
    if raw is None:  # an unset limit reads as the node's allocatable, as on a kubelet
        raw = node.cpu if name == "cpu" else node.memory if name == "memory" else "0"
    return str(math.ceil(quantity(raw) / quantity(ref.get("divisor", "1"))))


def quantity(text: str) -> float:
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def container_env(pod: dict[str, Any], container: dict[str, Any], objects: Objects, node: AgentConfig,
                  service_env: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {"HOSTNAME": pod["metadata"]["name"], **node.env}
    declared: dict[str, str] = {}
    for source in container.get("envFrom", []):
        secret = "secretRef" in source
        kind, ref = ("secrets", source["secretRef"]) if secret else ("configmaps", source["configMapRef"])
        data = objects.data(kind, ref["name"], bool(ref.get("optional")))
        for k, v in (data or {}).items():
            declared[source.get("prefix", "") + k] = v.decode()
    for var in container.get("env", []):
        if "valueFrom" not in var:
            declared[var["name"]] = expand(var.get("value", ""), {**service_env, **declared})
            continue
        src = var["valueFrom"]
        value: str | None
        if "fieldRef" in src:
            value = field_value(pod, src["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in src:
            value = resource_value(container, src["resourceFieldRef"], node)
        elif "secretKeyRef" in src:
            value = objects.key("secrets", src["secretKeyRef"])
        else:
            value = objects.key("configmaps", src["configMapKeyRef"])
        if value is not None:
            declared[var["name"]] = value
    return {**env, **service_env, **declared}


# -- volumes --------------------------------------------------------------------------------------
def write_files(directory: Path, files: dict[str, bytes], items: list[dict[str, Any]] | None, mode: int) -> None:
    chosen = {i["path"]: (files[i["key"]], i.get("mode", mode)) for i in items if i["key"] in files} if items \
        else {k: (v, mode) for k, v in files.items()}
    for rel, (content, file_mode) in chosen.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(file_mode)


def make_volume(volume: dict[str, Any], directory: Path, pod: dict[str, Any], objects: Objects,
                api: Api) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        directory.chmod(0o777)
    elif "secret" in volume:
        src = volume["secret"]
        data = objects.data("secrets", src["secretName"], bool(src.get("optional")))
        write_files(directory, data or {}, src.get("items"), src.get("defaultMode", 0o644))
    elif "configMap" in volume:
        src = volume["configMap"]
        data = objects.data("configmaps", src["name"], bool(src.get("optional")))
        write_files(directory, data or {}, src.get("items"), src.get("defaultMode", 0o644))
    elif "downwardAPI" in volume:
        write_downward(directory, volume["downwardAPI"].get("items", []), pod, 0o644)
    elif "projected" in volume:
        mode = volume["projected"].get("defaultMode", 0o644)
        for source in volume["projected"].get("sources", []):
            if "secret" in source or "configMap" in source:
                kind, ref = ("secrets", source["secret"]) if "secret" in source else ("configmaps", source["configMap"])
                data = objects.data(kind, ref["name"], bool(ref.get("optional")))
                write_files(directory, data or {}, ref.get("items"), mode)
            elif "downwardAPI" in source:
                write_downward(directory, source["downwardAPI"].get("items", []), pod, mode)
            elif "serviceAccountToken" in source:
                write_files(directory, {"token": service_account_token(api, pod, source["serviceAccountToken"])},
                            [{"key": "token", "path": source["serviceAccountToken"]["path"]}], mode)
    else:
        raise ConfigError(f"volume {volume['name']!r}: this node agent mounts only secret, configMap, "
                          "downwardAPI, projected, emptyDir and hostPath volumes")


def write_downward(directory: Path, items: list[dict[str, Any]], pod: dict[str, Any], mode: int) -> None:
    files = {i["path"]: field_value(pod, i["fieldRef"]["fieldPath"]).encode() for i in items if "fieldRef" in i}
    write_files(directory, files, None, mode)


def service_account_token(api: Api, pod: dict[str, Any], source: dict[str, Any]) -> bytes:
    meta = pod["metadata"]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [source["audience"]] if source.get("audience") else None,
                     "expirationSeconds": source.get("expirationSeconds", 3607),
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}}
    sa = pod["spec"].get("serviceAccountName", "default")
    reply = api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
    return str(reply["status"]["token"]).encode()


class MountPoints:
    """Mount points created on this machine for containers, removed when their last user ends.

    The host's filesystem is shared by every node agent on the machine (two test suites at once run two), so
    who uses a mount point is recorded machine-wide: a JSON file in /tmp, read and written under an flock on
    /tmp itself (a lock on the file would race with its removal). A user is an agent process (pid and start
    time), so the points of an agent that died are pruned by the next one. The file goes with its last entry.
    """

    state_file = Path("/tmp/mahavishnu-k8s-mount-points.json")  # fixed: TMPDIR may differ between agents

    def __init__(self) -> None:
        self.lock = threading.Lock()
        me = psutil.Process()
        self.me = f"{me.pid}:{me.create_time()}"

    @contextlib.contextmanager
    def _users(self) -> Iterator[dict[str, dict[str, int]]]:
        """The machine-wide record {mount point: {agent: uses}}, locked while the block runs."""
        with self.lock:
            fd = os.open(self.state_file.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    users: dict[str, dict[str, int]] = json.loads(self.state_file.read_text())
                except (FileNotFoundError, ValueError):
                    users = {}
                for holders in users.values():
                    for agent in [a for a in holders if a != self.me and not _alive(a)]:
                        del holders[agent]
                yield users
                for path in sorted([p for p, h in users.items() if not h], key=lambda p: len(Path(p).parts),
                                   reverse=True):  # the deepest first, so a directory is empty when it goes
                    del users[path]
                    with contextlib.suppress(OSError):
                        Path(path).rmdir() if Path(path).is_dir() else Path(path).unlink()
                if users:
                    tmp = self.state_file.with_name(f"{self.state_file.name}.{os.getpid()}")
                    tmp.write_text(json.dumps(users))
                    tmp.replace(self.state_file)
                else:
                    self.state_file.unlink(missing_ok=True)
            finally:
                os.close(fd)  # releases the flock

    def acquire(self, path: Path, is_dir: bool) -> None:
        with self._users() as users:
            ours = [p for p in [path, *path.parents] if str(p) in users or not p.exists()]
            if not path.exists():
                if is_dir:
                    path.mkdir(parents=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
            for p in ours:
                holders = users.setdefault(str(p), {})
                holders[self.me] = holders.get(self.me, 0) + 1

    def release(self, path: Path) -> None:
        with self._users() as users:
            for p in [path, *path.parents]:
                holders = users.get(str(p), {})
                if holders.get(self.me, 0) > 1:
                    holders[self.me] -= 1
                else:
                    holders.pop(self.me, None)

    def release_all(self) -> None:
        """At shutdown: a worker stopped mid-start may still hold some."""
        with self._users() as users:
            for holders in users.values():
                holders.pop(self.me, None)


def _alive(agent: str) -> bool:
    pid, started = agent.split(":")
    try:
        return psutil.Process(int(pid)).create_time() == float(started)
    except (psutil.NoSuchProcess, ValueError):
        return False
