"""Our Session-Buddy-compatible peer: `mahavishnu peer serve` (127.0.0.1:8678, MCP at /mcp).

It keeps Session-Buddy's tool names and parameters, answers with structured JSON instead of
prose, and really runs tasks: each peer pool is a local pool of 3 worker processes. A task
from a Mahavishnu server arrives as `execute_on_pool(pool_id, prompt, context)` with
`context["mahavishnu"] = {task_type, payload, task_id}`; a plain prompt (what other
Session-Buddy clients send) runs the `prompt` task type, if the operator enabled it.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mcp_server import __version__
from pools.errors import PoolError, PoolNotFound
from pools.manager import PoolManager
from pools.models import PoolConfig, TaskOptions, TaskRecord

PEER_WORKERS = 3
DEFAULT_PEER_PORT = 8678


class PeerWorker(BaseModel):
    worker_id: str
    state: str
    pid: int | None = None
    tasks_done: int = 0


class PeerPool(BaseModel):
    pool_id: str
    status: str
    workers: list[PeerWorker]
    worker_count: int
    queue_size: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0


class PeerPoolList(BaseModel):
    pools: list[PeerPool]


class PeerExecution(BaseModel):
    pool_id: str
    task_id: str
    status: str = Field(description="completed, failed, cancelled or timed_out")
    result: Any = None
    summary: str | None = None
    error: str | None = None
    duration_s: float | None = None
    worker_id: str | None = None


class PeerBatch(BaseModel):
    pool_id: str
    results: list[PeerExecution]


class PeerHealth(BaseModel):
    healthy: bool
    pools: list[PeerPool]


class PeerDeleted(BaseModel):
    pool_id: str
    deleted: bool


class Stored(BaseModel):
    id: int
    stored: bool = True


class Conversation(BaseModel):
    id: int
    content: str
    project: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    score: float
    created: float


class ConversationHits(BaseModel):
    query: str
    results: list[Conversation]


class Liveness(BaseModel):
    alive: bool
    version: str
    pools: int
    uptime_s: float


def local_name(pool_id: str) -> str:
    """A peer pool id -> the name of the local pool behind it (pool names have a stricter shape)."""
    return "sb-" + re.sub(r"[^A-Za-z0-9._-]", "-", pool_id)[:59]


def build_peer(manager: PoolManager) -> MCPServer:
    peer = MCPServer("session-buddy", title="Mahavishnu Session-Buddy peer", version=__version__,
                     instructions="Session-Buddy-compatible pool peer: create_pool, execute_on_pool, ...")
    started = time.monotonic()

    def pool_view(pool_id: str) -> PeerPool:
        try:
            info = manager.get_pool(local_name(pool_id))
        except PoolNotFound:
            raise ToolError(f"pool {pool_id!r} not found on this peer; create it with create_pool") from None
        return PeerPool(pool_id=pool_id, status=info.status.value, worker_count=info.workers,
                        workers=[PeerWorker(worker_id=w.worker_id, state=w.state, pid=w.pid, tasks_done=w.tasks_done)
                                 for w in info.worker_details],
                        queue_size=info.metrics.queue_size, tasks_completed=info.metrics.tasks_completed,
                        tasks_failed=info.metrics.tasks_failed)

    def peer_ids() -> list[str]:
        return [p.labels.get("peer_pool_id", p.name) for p in manager.list_pools()]

    async def run_one(pool_id: str, prompt: str, context: dict[str, Any] | None,
                      timeout: float | None) -> PeerExecution:
        spec = (context or {}).get("mahavishnu")
        if isinstance(spec, dict) and pool_id not in peer_ids():
            # Several replicas behind one Service (Kubernetes warm mode) each make the pool on first use.
            await create_pool(pool_id)
        pool_view(pool_id)  # exists?
        if isinstance(spec, dict) and spec.get("task_type"):
            task_type, payload = str(spec["task_type"]), dict(spec.get("payload") or {})
        else:
            task_type, payload = "prompt", {"prompt": prompt}
        try:
            record = await manager.submit(local_name(pool_id), task_type, payload,
                                          TaskOptions(timeout=timeout or 300.0))
        except PoolError as exc:
            raise ToolError(exc.message) from exc
        try:
            done = await manager.wait(record.task_id, (timeout or 300.0) + 10.0)
        except asyncio.CancelledError:
            # The caller cancelled (or went away): really stop the work, then let the cancel through.
            await manager.cancel(record.task_id)
            raise
        return execution(pool_id, done)

    @peer.tool()
    async def create_pool(pool_id: Annotated[str | None, Field(description="Id for the new pool.")] = None) -> PeerPool:
        """Create a pool of 3 workers (or return it when it exists)."""
        pool_id = pool_id or f"pool_{int(time.time() * 1000):x}"
        if pool_id not in peer_ids():
            try:
                await manager.register(PoolConfig(name=local_name(pool_id), min_workers=PEER_WORKERS,
                                                  max_workers=PEER_WORKERS, labels={"peer_pool_id": pool_id}))
            except PoolError as exc:
                raise ToolError(exc.message) from exc
        return pool_view(pool_id)

    @peer.tool()
    async def execute_on_pool(pool_id: str, prompt: str, context: dict[str, Any] | None = None,
                              timeout: float | None = None) -> PeerExecution:
        """Run one task on a pool and return its outcome."""
        return await run_one(pool_id, prompt, context, timeout)

    @peer.tool()
    async def execute_batch_on_pool(pool_id: str, prompts: list[str], context: dict[str, Any] | None = None,
                                    timeout: float | None = None) -> PeerBatch:
        """Run several tasks on a pool at once; context["mahavishnu_batch"] may give one task spec per prompt."""
        specs = (context or {}).get("mahavishnu_batch") or []
        runs = [run_one(pool_id, prompt, {"mahavishnu": specs[i]} if i < len(specs) else context, timeout)
                for i, prompt in enumerate(prompts)]
        return PeerBatch(pool_id=pool_id, results=list(await asyncio.gather(*runs)))

    @peer.tool()
    async def check_pool_health(pool_id: str | None = None) -> PeerHealth:
        """Health of one pool or all pools."""
        views = [pool_view(pool_id)] if pool_id else [pool_view(p) for p in peer_ids()]
        return PeerHealth(healthy=all(v.status in ("running", "scaling") for v in views), pools=views)

    @peer.tool()
    async def get_pool_status(pool_id: str) -> PeerPool:
        """Status and workers of one pool."""
        return pool_view(pool_id)

    @peer.tool()
    async def list_pools() -> PeerPoolList:
        """Every pool on this peer."""
        return PeerPoolList(pools=[pool_view(p) for p in peer_ids()])

    @peer.tool()
    async def delete_pool(pool_id: str, timeout: float | None = None) -> PeerDeleted:
        """Stop a pool's workers and remove it."""
        if pool_id not in peer_ids():
            return PeerDeleted(pool_id=pool_id, deleted=False)
        await manager.close_pool(local_name(pool_id))
        return PeerDeleted(pool_id=pool_id, deleted=True)

    @peer.tool()
    async def store_reflection(content: str, tags: list[str] | None = None) -> Stored:
        """Keep a piece of text, searchable later."""
        row = manager.store.memory.store_conversation(content, None, None, tags)
        manager.store.commit()
        return Stored(id=row)

    @peer.tool()
    async def store_conversation(content: str, project: str | None = None,
                                 metadata: dict[str, Any] | None = None) -> Stored:
        """Keep a conversation (or a task memory record), searchable later."""
        row = manager.store.memory.store_conversation(content, project, metadata, None)
        manager.store.commit()
        return Stored(id=row)

    @peer.tool()
    async def search_conversations(query: str, limit: int = 10, min_score: float = 0.0,
                                   project: str | None = None) -> ConversationHits:
        """Full-text search over stored conversations and reflections, best first."""
        hits = manager.store.memory.search_conversations(query, limit, min_score, project)
        return ConversationHits(query=query, results=[Conversation.model_validate(h) for h in hits])

    @peer.tool()
    async def get_liveness() -> Liveness:
        """Is the peer up, and for how long."""
        return Liveness(alive=True, version=__version__, pools=len(peer_ids()),
                        uptime_s=round(time.monotonic() - started, 3))

    return peer


def execution(pool_id: str, record: TaskRecord) -> PeerExecution:
    return PeerExecution(pool_id=pool_id, task_id=record.task_id, status=record.state.value, result=record.result,
                         summary=record.summary, error=record.error, duration_s=record.duration_s,
                         worker_id=record.worker_id)
