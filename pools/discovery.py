"""Finding peers: an ecosystem file lists candidates; each is probed, reported and, on
request, registered as a pool.

$MAHAVISHNU_HOME/ecosystem.yaml (or settings `ecosystem_file`):

    peers:
      - name: buddy-east                       # the pool name to register it under
        endpoint: http://10.0.0.5:8678/mcp
        token_env: BUDDY_EAST_TOKEN             # optional: variable holding its bearer token
    kubernetes:
      - name: cluster-a
        namespace: mahavishnu
        context: prod-east                      # or kubeconfig: /path, or endpoint + api_token_env

Without a file, the local default peer (http://127.0.0.1:8678/mcp) is probed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pools.errors import InvalidInput, PoolError, describe_validation_error
from pools.peer_client import PeerClient

DEFAULT_PEER = "http://127.0.0.1:8678/mcp"


class PeerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    endpoint: str = Field(pattern=r"^https?://")
    token_env: str | None = None


class KubernetesEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str = "mahavishnu"
    container_image: str = "python:3.13-slim"
    kubeconfig: str | None = None
    context: str | None = None
    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    api_token_env: str | None = None
    max_workers: int = 10

    def pool_config(self) -> Any:
        from pools.models import PoolConfig, PoolType

        return PoolConfig(name=self.name, type=PoolType.KUBERNETES, namespace=self.namespace,
                          container_image=self.container_image, kubeconfig=self.kubeconfig,
                          kube_context=self.context, endpoint=self.endpoint, api_token_env=self.api_token_env,
                          max_workers=self.max_workers, labels={"discovered": "ecosystem"})


class Ecosystem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    peers: list[PeerEntry] = Field(default_factory=list)
    kubernetes: list[KubernetesEntry] = Field(default_factory=list)


class Discovered(BaseModel):
    name: str
    kind: str = Field(description="session-buddy or kubernetes")
    endpoint: str | None = None
    namespace: str | None = None
    healthy: bool
    detail: str = Field(description="What the probe found, or why the candidate is not usable.")
    tools: int | None = Field(default=None, description="How many MCP tools the peer lists.")
    missing_tools: list[str] = Field(default_factory=list)
    registered: bool = Field(description="A pool for this candidate exists (now or before).")
    pool_id: str | None = None
    action: str = Field(description="registered now, already registered, or why it was left alone")


class DiscoverReport(BaseModel):
    source: str
    found: list[Discovered]
    registered_now: int


def load_ecosystem(path: Path) -> Ecosystem:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
        return Ecosystem.model_validate(data)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}", field="ecosystem_file") from exc
    except ValidationError as exc:
        message, field = describe_validation_error(exc)
        raise InvalidInput(f"{path}: {message}", field=f"ecosystem.{field}" if field else "ecosystem_file") from exc


async def probe_peer(entry: PeerEntry, token: str | None) -> tuple[bool, str, int | None, list[str]]:
    import asyncio

    from pools.backends.session_buddy import REQUIRED_TOOLS

    client = PeerClient(entry.endpoint, token)
    up, how = await asyncio.to_thread(client.health)
    if not up:
        return False, f"GET /health failed: {how}", None, []
    try:
        tools = await client.tool_names()
    except PoolError as exc:
        return False, f"/health answered but MCP did not: {exc.message}", None, []
    missing = [t for t in REQUIRED_TOOLS if t not in tools]
    if missing:
        return False, f"reachable, but lacks the pool tools {', '.join(missing)}", len(tools), missing
    return True, f"healthy: /health {how}, {len(tools)} MCP tools", len(tools), []


async def _probe_cluster(manager: Any, config: Any) -> str:
    from pools.backends.kubernetes import KubernetesBackend

    return await KubernetesBackend("pool_probe", config, manager, context={}).probe()


async def discover(manager: Any, ecosystem_file: Path | None, use_file: bool, auto_register: bool) -> DiscoverReport:
    import asyncio

    from pools.models import PoolConfig, PoolType

    path = ecosystem_file or manager.settings.ecosystem_file or manager.settings.home / "ecosystem.yaml"
    if use_file and not path.exists():  # asked for the file: probing something else instead would mislead
        raise InvalidInput(f"no ecosystem file at {path}; write one (see the README's 'Peers, discovery and "
                           "memory'), name another with `ecosystem_file`, or leave out `from_ecosystem` to probe "
                           f"the local default peer {DEFAULT_PEER}", field="ecosystem_file")
    if use_file:
        ecosystem, source = load_ecosystem(path), str(path)
    else:
        ecosystem, source = Ecosystem(peers=[PeerEntry(name="session-buddy", endpoint=DEFAULT_PEER)]), \
            f"default local peer {DEFAULT_PEER}"
    existing = {p.endpoint: p for p in manager.list_pools() if p.endpoint}
    names = {p.name for p in manager.list_pools()}
    found: list[Discovered] = []
    results = await asyncio.gather(*(probe_peer(e, os.environ.get(e.token_env) if e.token_env else None)
                                     for e in ecosystem.peers))
    registered_now = 0
    for entry, (healthy, detail, tools, missing) in zip(ecosystem.peers, results, strict=True):
        pool = existing.get(entry.endpoint)
        action = "already registered" if pool else ("not registered (pass auto_register)" if healthy
                                                    else "skipped: not healthy")
        if healthy and pool is None and auto_register:
            if entry.name in names:
                action = f"skipped: a pool named {entry.name!r} already exists with another endpoint"
            else:
                labels = {"discovered": "ecosystem"} | ({"token_env": entry.token_env} if entry.token_env else {})
                try:
                    pool = await manager.register(PoolConfig(name=entry.name, type=PoolType.SESSION_BUDDY,
                                                             endpoint=entry.endpoint, labels=labels))
                    action, registered_now = "registered now", registered_now + 1
                except PoolError as exc:
                    action = f"registration failed: {exc.message}"
        found.append(Discovered(name=entry.name, kind="session-buddy", endpoint=entry.endpoint, healthy=healthy,
                                detail=detail, tools=tools, missing_tools=missing, registered=pool is not None,
                                pool_id=pool.pool_id if pool else None, action=action))
    for k8s in ecosystem.kubernetes:
        config = k8s.pool_config()
        pool = next((p for p in manager.list_pools(pool_type=PoolType.KUBERNETES)
                     if p.namespace == k8s.namespace and p.endpoint == k8s.endpoint), None)
        try:
            detail, healthy = await _probe_cluster(manager, config), True
        except PoolError as exc:
            detail, healthy = exc.message, False
        action = "already registered" if pool else ("not registered (pass auto_register)" if healthy
                                                    else "skipped: not healthy")
        if healthy and pool is None and auto_register:
            try:
                pool = await manager.register(config)
                action, registered_now = "registered now", registered_now + 1
            except PoolError as exc:
                action = f"registration failed: {exc.message}"
        found.append(Discovered(name=k8s.name, kind="kubernetes", endpoint=k8s.endpoint, namespace=k8s.namespace,
                                healthy=healthy, detail=detail, registered=pool is not None,
                                pool_id=pool.pool_id if pool else None, action=action))
    return DiscoverReport(source=source, found=found, registered_now=registered_now)
