"""Finding peers: an ecosystem file lists candidates; each is probed, reported and, on
request, registered as a pool.

$MAHAVISHNU_HOME/ecosystem.yaml (or settings `ecosystem_file`):

    peers:
      - name: buddy-east                       # the pool name to register it under
        endpoint: http://10.0.0.5:8678/mcp
        credential: buddy-east                  # optional: a credential of settings.yaml bound to it
    kubernetes:
      - name: cluster-a
        namespace: mahavishnu
        context: prod-east                      # a context the operator allows, or endpoint (+ credential)

Without a file, the local default peer (http://127.0.0.1:8678/mcp) is probed.

The file names no secrets and no paths: credentials and kubeconfig are the operator's settings.
Its endpoints are checked like any client-given endpoint (allowed_endpoints, or a credential's
endpoints), since a client can point at a file of its own. Such a file must lie inside the file
roots; it is read in a thread, capped in size, and a parse error never quotes its lines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pools.errors import InvalidInput, PoolError
from pools.file_roots import FileRoots
from pools.peer_client import PeerClient

DEFAULT_PEER = "http://127.0.0.1:8678/mcp"


class PeerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    endpoint: str = Field(pattern=r"^https?://")
    credential: str | None = None


class KubernetesEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str = "mahavishnu"
    container_image: str = "python:3.13-slim"
    context: str | None = None
    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    credential: str | None = None
    max_workers: int = 10

    def pool_config(self) -> Any:
        from pools.models import PoolConfig, PoolType

        return PoolConfig(name=self.name, type=PoolType.KUBERNETES, namespace=self.namespace,
                          container_image=self.container_image, kube_context=self.context,
                          endpoint=self.endpoint, credential=self.credential,
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


MAX_ECOSYSTEM_BYTES = 1 << 20


def load_ecosystem(path: Path, roots: FileRoots | None = None) -> Ecosystem:
    """Parse an ecosystem file (blocking: call it in a thread). With `roots`, the path must be a
    regular file inside them. Errors name the line, never its content."""
    import yaml

    from pools.file_roots import FileCaps, OutsideRoots, OverCap

    reader = roots or FileRoots([str(path.resolve().parent)])
    reader = FileRoots(reader.roots, reader.client_roots, FileCaps(1, MAX_ECOSYSTEM_BYTES, MAX_ECOSYSTEM_BYTES))
    try:
        real = reader.resolve(str(path), what="ecosystem_file")
        if real.is_dir():
            raise OutsideRoots(f"ecosystem_file {str(path)!r} is a directory; give a YAML file")
        text = reader.read_text(str(real))
    except (OutsideRoots, OverCap, FileNotFoundError) as exc:
        raise InvalidInput(str(exc), field="ecosystem_file") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read ecosystem_file {str(path)!r}: {exc.strerror}", field="ecosystem_file") \
            from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InvalidInput(f"{path} is not valid YAML{where}", field="ecosystem_file") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must hold a mapping with peers and/or kubernetes", field="ecosystem_file")
    try:
        return Ecosystem.model_validate(data)
    except ValidationError as exc:
        # Name the fields and what is wrong with them; pydantic's own text would repeat the values.
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
        raise InvalidInput(f"{path}: invalid entries at {', '.join(fields)} (see pools/discovery.py for the "
                           "format)", field=f"ecosystem.{fields[0]}" if fields else "ecosystem_file") from None


async def probe_peer(entry: PeerEntry, token: str | None) -> tuple[bool, str, int | None, list[str]]:
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

    access = await manager.kube_access(config)
    return await KubernetesBackend("pool_probe", config, manager, context={}, access=access).probe()


async def _probe_entry(manager: Any, entry: PeerEntry) -> tuple[bool, str, int | None, list[str]]:
    try:
        token = await manager.peer_access(entry.endpoint, entry.credential)
    except PoolError as exc:
        return False, f"not probed: {exc.message}", None, []
    return await probe_peer(entry, token)


async def discover(manager: Any, ecosystem_file: Path | None, use_file: bool, auto_register: bool) -> DiscoverReport:
    from pools.models import PoolConfig, PoolType

    path = ecosystem_file or manager.settings.ecosystem_file or manager.settings.home / "ecosystem.yaml"
    client_file = ecosystem_file is not None  # a client's file is checked against the file roots first
    if use_file and not client_file and not await asyncio.to_thread(path.exists):
        # asked for the file: probing something else instead would mislead
        raise InvalidInput(f"no ecosystem file at {path}; write one (see the README's 'Peers, discovery and "
                           "memory'), name another with `ecosystem_file`, or leave out `from_ecosystem` to probe "
                           f"the local default peer {DEFAULT_PEER}", field="ecosystem_file")
    if use_file:
        ecosystem = await asyncio.to_thread(load_ecosystem, path, manager.file_roots() if client_file else None)
        source = str(path)
    else:
        ecosystem, source = Ecosystem(peers=[PeerEntry(name="session-buddy", endpoint=DEFAULT_PEER)]), \
            f"default local peer {DEFAULT_PEER}"
    existing = {p.endpoint: p for p in manager.list_pools() if p.endpoint}
    names = {p.name for p in manager.list_pools()}
    found: list[Discovered] = []
    results = await asyncio.gather(*(_probe_entry(manager, e) for e in ecosystem.peers))
    registered_now = 0
    for entry, (healthy, detail, tools, missing) in zip(ecosystem.peers, results, strict=True):
        pool = existing.get(entry.endpoint)
        action = "already registered" if pool else ("not registered (pass auto_register)" if healthy
                                                    else "skipped: not healthy")
        if healthy and pool is None and auto_register:
            if entry.name in names:
                action = f"skipped: a pool named {entry.name!r} already exists with another endpoint"
            else:
                try:
                    pool = await manager.register(PoolConfig(name=entry.name, type=PoolType.SESSION_BUDDY,
                                                             endpoint=entry.endpoint, credential=entry.credential,
                                                             labels={"discovered": "ecosystem"}))
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
