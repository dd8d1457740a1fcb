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
from typing import Any

from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from mcp_server import __version__
from mcp_server.toolserver import Handler, ModelTool, ModelToolServer, Progress
from pools.errors import PoolNotFound, PoolUnavailable
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolStatus, TaskOptions, TaskRecord

PEER_WORKERS = 3
DEFAULT_PEER_PORT = 8678


class PeerWorker(BaseModel):
    worker_id: str
    state: str
    pid: int | None = None
    tasks_done: int = 0
    memory_mb: float | None = Field(default=None, description="Resident memory of the worker process.")
    cpu_percent: float | None = Field(default=None, description="CPU of the worker process (100 = one core).")


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


class PeerInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


POOL_ID = "The peer pool's id."
TIMEOUT = "Seconds the work may take."


class CreatePoolInput(PeerInput):
    pool_id: str | None = Field(default=None, min_length=1, max_length=200, description="Id for the new pool.")


class PoolIdInput(PeerInput):
    pool_id: str = Field(min_length=1, max_length=200, description=POOL_ID)


class OptionalPoolIdInput(PeerInput):
    pool_id: str | None = Field(default=None, min_length=1, max_length=200, description=POOL_ID + " Omit for all.")


class ExecuteOnPoolInput(PoolIdInput):
    prompt: str = Field(description="What to run (a plain prompt runs the prompt task type).")
    context: dict[str, Any] | None = Field(default=None, description="context.mahavishnu = {task_type, payload, "
                                                                     "task_id} runs that task instead.")
    timeout: float | None = Field(default=None, gt=0, le=7 * 24 * 3600, description=TIMEOUT)


class ExecuteBatchInput(PoolIdInput):
    prompts: list[str] = Field(min_length=1, max_length=1000, description="One task per prompt.")
    context: dict[str, Any] | None = Field(default=None, description="context.mahavishnu_batch gives one task "
                                                                     "spec per prompt.")
    timeout: float | None = Field(default=None, gt=0, le=7 * 24 * 3600, description=TIMEOUT)


class DeletePoolInput(PoolIdInput):
    timeout: float | None = Field(default=None, gt=0, le=3600, description=TIMEOUT)


class StoreReflectionInput(PeerInput):
    content: str = Field(min_length=1, description="Text to keep.")
    tags: list[str] | None = Field(default=None, description="Tags to find it by.")


class StoreConversationInput(PeerInput):
    content: str = Field(min_length=1, description="Text to keep.")
    project: str | None = Field(default=None, description="Project it belongs to.")
    metadata: dict[str, Any] | None = Field(default=None, description="Anything else; a task_id drops repeats.")


class SearchConversationsInput(PeerInput):
    query: str = Field(min_length=1, description="Words to find (all must match).")
    limit: int = Field(default=10, ge=1, le=500, description="Hits at most.")
    min_score: float = Field(default=0.0, ge=0, description="Leave out weaker hits.")
    project: str | None = Field(default=None, description="Only this project's.")


class NoInput(PeerInput):
    pass


def build_peer(manager: PoolManager) -> ModelToolServer:
    started = time.monotonic()

    def pool_view(pool_id: str) -> PeerPool:
        try:
            info = manager.get_pool(local_name(pool_id))
        except PoolNotFound:
            raise PoolNotFound(f"pool {pool_id!r} not found on this peer; create it with create_pool",
                               field="pool_id") from None
        return PeerPool(pool_id=pool_id, status=info.status.value, worker_count=info.workers,
                        workers=[PeerWorker(worker_id=w.worker_id, state=w.state, pid=w.pid, tasks_done=w.tasks_done,
                                            memory_mb=w.memory_mb, cpu_percent=w.cpu_percent)
                                 for w in info.worker_details],
                        queue_size=info.metrics.queue_size, tasks_completed=info.metrics.tasks_completed,
                        tasks_failed=info.metrics.tasks_failed)

    def peer_ids() -> list[str]:
        return [p.labels.get("peer_pool_id", p.name) for p in manager.list_pools()]

    async def ensure_pool(pool_id: str) -> PeerPool:
        if pool_id not in peer_ids():
            await manager.register(PoolConfig(name=local_name(pool_id), min_workers=PEER_WORKERS,
                                              max_workers=PEER_WORKERS, labels={"peer_pool_id": pool_id}))
            view = pool_view(pool_id)
            if view.status == PoolStatus.FAILED.value:  # its workers never came up: leave nothing behind
                info = manager.get_pool(local_name(pool_id))
                await manager.close_pool(local_name(pool_id))
                raise PoolUnavailable(f"pool {pool_id!r} could not start: {info.status_reason}", field="pool_id")
        return pool_view(pool_id)

    async def run_one(pool_id: str, prompt: str, context: dict[str, Any] | None,
                      timeout: float | None) -> PeerExecution:
        spec = (context or {}).get("mahavishnu")
        if isinstance(spec, dict) and pool_id not in peer_ids():
            # Several replicas behind one Service (Kubernetes warm mode) each make the pool on first use.
            await ensure_pool(pool_id)
        pool_view(pool_id)  # exists?
        if isinstance(spec, dict) and spec.get("task_type"):
            task_type, payload = str(spec["task_type"]), dict(spec.get("payload") or {})
        else:
            task_type, payload = "prompt", {"prompt": prompt}
        record = await manager.submit(local_name(pool_id), task_type, payload, TaskOptions(timeout=timeout or 300.0))
        try:
            done = await manager.wait(record.task_id, (timeout or 300.0) + 10.0)
        except asyncio.CancelledError:
            # The caller cancelled (or went away): really stop the work, then let the cancel through.
            await manager.cancel(record.task_id)
            raise
        return execution(pool_id, done)

    async def create_pool(inp: CreatePoolInput, progress: Progress) -> PeerPool:
        return await ensure_pool(inp.pool_id or f"pool_{int(time.time() * 1000):x}")

    async def execute_on_pool(inp: ExecuteOnPoolInput, progress: Progress) -> PeerExecution:
        return await run_one(inp.pool_id, inp.prompt, inp.context, inp.timeout)

    async def execute_batch_on_pool(inp: ExecuteBatchInput, progress: Progress) -> PeerBatch:
        specs = (inp.context or {}).get("mahavishnu_batch") or []
        runs = [run_one(inp.pool_id, prompt, {"mahavishnu": specs[i]} if i < len(specs) else inp.context,
                        inp.timeout) for i, prompt in enumerate(inp.prompts)]
        return PeerBatch(pool_id=inp.pool_id, results=list(await asyncio.gather(*runs)))

    async def check_pool_health(inp: OptionalPoolIdInput, progress: Progress) -> PeerHealth:
        views = [pool_view(inp.pool_id)] if inp.pool_id else [pool_view(p) for p in peer_ids()]
        return PeerHealth(healthy=all(v.status in ("running", "scaling") for v in views), pools=views)

    async def get_pool_status(inp: PoolIdInput, progress: Progress) -> PeerPool:
        return pool_view(inp.pool_id)

    async def list_pools(inp: NoInput, progress: Progress) -> PeerPoolList:
        return PeerPoolList(pools=[pool_view(p) for p in peer_ids()])

    async def delete_pool(inp: DeletePoolInput, progress: Progress) -> PeerDeleted:
        if inp.pool_id not in peer_ids():
            return PeerDeleted(pool_id=inp.pool_id, deleted=False)
        await manager.close_pool(local_name(inp.pool_id))
        return PeerDeleted(pool_id=inp.pool_id, deleted=True)

    async def store_reflection(inp: StoreReflectionInput, progress: Progress) -> Stored:
        row = manager.store.memory.store_conversation(inp.content, None, None, inp.tags)
        manager.store.commit()
        return Stored(id=row)

    async def store_conversation(inp: StoreConversationInput, progress: Progress) -> Stored:
        row = manager.store.memory.store_conversation(inp.content, inp.project, inp.metadata, None)
        manager.store.commit()
        return Stored(id=row)

    async def search_conversations(inp: SearchConversationsInput, progress: Progress) -> ConversationHits:
        hits = manager.store.memory.search_conversations(inp.query, inp.limit, inp.min_score, inp.project)
        return ConversationHits(query=inp.query, results=[Conversation.model_validate(h) for h in hits])

    async def get_liveness(inp: NoInput, progress: Progress) -> Liveness:
        return Liveness(alive=True, version=__version__, pools=len(peer_ids()),
                        uptime_s=round(time.monotonic() - started, 3))

    def hints(read_only: bool = False, destructive: bool = False, idempotent: bool = False) -> ToolAnnotations:
        return ToolAnnotations(read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=idempotent,
                               open_world_hint=False)

    tools: list[tuple[Handler, type[BaseModel], type[BaseModel], str, ToolAnnotations]] = [
        (create_pool, CreatePoolInput, PeerPool, "Create a pool of 3 workers (or return it when it exists).",
         hints(idempotent=True)),
        (execute_on_pool, ExecuteOnPoolInput, PeerExecution, "Run one task on a pool and return its outcome.",
         hints()),
        (execute_batch_on_pool, ExecuteBatchInput, PeerBatch,
         'Run several tasks on a pool at once; context["mahavishnu_batch"] may give one task spec per prompt.',
         hints()),
        (check_pool_health, OptionalPoolIdInput, PeerHealth, "Health of one pool or all pools.",
         hints(read_only=True, idempotent=True)),
        (get_pool_status, PoolIdInput, PeerPool, "Status and workers of one pool.",
         hints(read_only=True, idempotent=True)),
        (list_pools, NoInput, PeerPoolList, "Every pool on this peer.", hints(read_only=True, idempotent=True)),
        (delete_pool, DeletePoolInput, PeerDeleted, "Stop a pool's workers and remove it.",
         hints(destructive=True, idempotent=True)),
        (store_reflection, StoreReflectionInput, Stored, "Keep a piece of text, searchable later.", hints()),
        (store_conversation, StoreConversationInput, Stored,
         "Keep a conversation (or a task memory record), searchable later.", hints(idempotent=True)),
        (search_conversations, SearchConversationsInput, ConversationHits,
         "Full-text search over stored conversations and reflections, best first.",
         hints(read_only=True, idempotent=True)),
        (get_liveness, NoInput, Liveness, "Is the peer up, and for how long.", hints(read_only=True, idempotent=True)),
    ]
    return ModelToolServer(
        "session-buddy", title="Mahavishnu Session-Buddy peer", version=__version__,
        instructions="Session-Buddy-compatible pool peer: create_pool, execute_on_pool, ...",
        tools=[ModelTool(fn.__name__, None, doc, inp, out, fn, ann) for fn, inp, out, doc, ann in tools])


def execution(pool_id: str, record: TaskRecord) -> PeerExecution:
    return PeerExecution(pool_id=pool_id, task_id=record.task_id, status=record.state.value, result=record.result,
                         summary=record.summary, error=record.error, duration_s=record.duration_s,
                         worker_id=record.worker_id)
