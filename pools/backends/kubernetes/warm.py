"""Warm mode: a Deployment of the peer server behind a Service, scaled by an HPA; tasks go to the
Service over MCP, as to a session-buddy pool.

    up(): apply Secret, Deployment, Service, HPA (server-side apply: a changed image or replica
          range rolls out) ─> wait for a ready replica ─> MCP peer at the Service
          └ any step fails: delete what this call created, report why
    follow(): watch the Deployment; slots = 3 tasks per ready replica, as the HPA scales it

The peers run with the server's enabled task types (MAHAVISHNU_ENABLE_TASK_TYPES), so what
`accepts()` promises is what they run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from pools.backends.base import BackendSnapshot, Job, TaskSink
from pools.backends.kubernetes import api, manifests
from pools.backends.kubernetes.informer import Health, Informer
from pools.errors import PoolUnavailable
from pools.models import PoolConfig, PoolType

APPLY = "application/apply-patch+yaml"  # JSON is YAML: server-side apply takes our dicts as they are


def ready_replicas(deployment: Any) -> int:
    """Ready replicas of the current template only: an old image's replicas do not count."""
    status = deployment.status
    if status is None or (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return 0
    return int(min(status.ready_replicas or 0, status.updated_replicas or status.ready_replicas or 0))


class WarmPool:
    def __init__(self, pool_id: str, config: PoolConfig, sink: TaskSink, clients: api.Clients,
                 explain: Callable[[BaseException, str], PoolUnavailable], *, enabled_task_types: list[str] | None,
                 poll: float, ready_timeout: float) -> None:
        self.pool_id = pool_id
        self.config = config
        self.sink = sink
        self.k = clients
        self._explain = explain
        self._enabled = enabled_task_types or ["analyze", "echo"]
        self._poll = poll
        self._ready_timeout = ready_timeout
        self.peer: Any = None
        self.name = manifests.warm_name(pool_id)
        self._informer: Informer | None = None

    @property
    def ready(self) -> bool:
        return self.peer is not None

    def _objects(self, token: str) -> list[tuple[str, Any, Any, dict[str, Any]]]:
        """(kind, apply, delete, manifest) in creation order."""
        c, p, k = self.config, self.pool_id, self.k
        return [
            ("Secret", k.core.patch_namespaced_secret, k.core.delete_namespaced_secret,
             manifests.warm_secret(c, p, token)),
            ("Deployment", k.apps.patch_namespaced_deployment, k.apps.delete_namespaced_deployment,
             manifests.warm_deployment(c, p, self._enabled)),
            ("Service", k.core.patch_namespaced_service, k.core.delete_namespaced_service,
             manifests.warm_service(c, p)),
            ("HorizontalPodAutoscaler", k.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
             k.autoscaling.delete_namespaced_horizontal_pod_autoscaler, manifests.warm_hpa(c, p)),
        ]

    async def _token(self) -> str:
        """The peer's token: the one in the Secret when it exists (replicas already use it)."""
        try:
            secret = await api.call(self.k.core.read_namespaced_secret, self.name, self.config.namespace)
        except Exception as exc:
            if api.status_of(exc) != 404:
                raise self._explain(exc, f"reading the warm Secret {self.name}") from exc
            return secrets.token_hex(24)
        data = secret.data or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else secrets.token_hex(24)

    async def up(self) -> None:
        ns = self.config.namespace
        token = await self._token()
        created: list[tuple[str, Any]] = []
        try:
            for kind, apply, delete, body in self._objects(token):
                existed = await self._exists(kind)
                try:
                    await api.call(apply, self.name, ns, body, field_manager=manifests.MANAGER, force=True,
                                   _content_type=APPLY)
                except Exception as exc:
                    raise self._explain(exc, f"applying the warm {kind} {self.name}") from exc
                if not existed:
                    created.append((kind, delete))
            ready = await self._wait_ready()
            await self._connect_peer(token, ready)
        except BaseException:
            for _kind, delete in reversed(created):  # a failed warm-up leaves nothing behind
                with contextlib.suppress(Exception):
                    await api.call(delete, self.name, ns, propagation_policy="Foreground")
            raise

    async def _exists(self, kind: str) -> bool:
        read = {"Secret": self.k.core.read_namespaced_secret, "Deployment": self.k.apps.read_namespaced_deployment,
                "Service": self.k.core.read_namespaced_service,
                "HorizontalPodAutoscaler": self.k.autoscaling.read_namespaced_horizontal_pod_autoscaler}[kind]
        try:
            await api.call(read, self.name, self.config.namespace)
        except Exception as exc:
            if api.status_of(exc) == 404:
                return False
            raise self._explain(exc, f"reading the warm {kind} {self.name}") from exc
        return True

    async def _ready_replicas(self) -> int:
        try:
            deployment = await api.call(self.k.apps.read_namespaced_deployment, self.name, self.config.namespace)
        except Exception as exc:
            raise self._explain(exc, f"reading the warm Deployment {self.name}") from exc
        return ready_replicas(deployment)

    async def _wait_ready(self) -> int:
        deadline = time.monotonic() + self._ready_timeout
        while True:
            ready = await self._ready_replicas()
            if ready:
                return ready
            if time.monotonic() > deadline:
                ns = self.config.namespace
                raise PoolUnavailable(f"the warm Deployment {self.name} has no ready replica after "
                                      f"{self._ready_timeout:g}s; `kubectl -n {ns} describe deployment {self.name}`")
            await asyncio.sleep(self._poll)

    async def _connect_peer(self, token: str, ready: int) -> None:
        from pools.backends.session_buddy import PEER_WORKERS, SessionBuddyBackend

        try:
            service = await api.call(self.k.core.read_namespaced_service, self.name, self.config.namespace)
        except Exception as exc:
            raise self._explain(exc, f"reading the warm Service {self.name}") from exc
        url = self.config.labels.get("warm_endpoint") or \
            f"http://{service.spec.cluster_ip}:{manifests.WARM_PORT}/mcp"
        peer_config = self.config.model_copy(update={"type": PoolType.SESSION_BUDDY, "endpoint": url})
        peer = SessionBuddyBackend(self.pool_id, peer_config, self.sink, token=token,
                                   health_interval=max(self._poll, 0.5), slots=PEER_WORKERS * ready)
        await peer.verify()
        await peer.start()
        self.peer = peer

    def follow(self, health: Health, explain: Callable[[BaseException, str], str], *, backoff: float,
               watch_timeout: int) -> None:
        """Watch the Deployment (no polling): as the HPA scales it, as many tasks in flight as its
        ready replicas have workers."""
        selector = ",".join(f"{k}={v}" for k, v in manifests.warm_selector(self.config, self.pool_id).items())
        self._informer = Informer("Deployments", self.k.apps.list_namespaced_deployment, self.config.namespace,
                                  selector, self._on_deployment, health, explain, backoff=backoff,
                                  watch_timeout=watch_timeout)
        self._informer.start()

    def _on_deployment(self, kind: str, deployment: Any) -> None:
        from pools.backends.session_buddy import PEER_WORKERS

        if deployment.metadata.name != self.name or kind == "DELETED" or self.peer is None:
            return
        ready = ready_replicas(deployment)
        if ready and self.peer.slots != PEER_WORKERS * ready:
            self.peer.slots = PEER_WORKERS * ready
            self.peer._pump()

    async def close(self, *, abandon: bool) -> None:
        if self._informer is not None:
            await self._informer.stop()
        if self.peer is not None:
            await self.peer.close(abandon=abandon)
        if abandon:
            return
        for _, _, delete, _ in reversed(self._objects("")):
            with contextlib.suppress(Exception):
                await api.call(delete, self.name, self.config.namespace, propagation_policy="Foreground")

    # -- tasks go to the peer ---------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if self.peer is None:
            raise PoolUnavailable(f"the warm peers of pool {self.config.name!r} are not ready")
        self.peer.submit(job)

    def cancel(self, task_id: str) -> bool:
        return bool(self.peer is not None and self.peer.cancel(task_id))

    def take_queued(self, limit: int) -> list[Job]:
        return list(self.peer.take_queued(limit)) if self.peer is not None else []

    def snapshot(self) -> BackendSnapshot:
        return self.peer.snapshot()  # type: ignore[no-any-return]
