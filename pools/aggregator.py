"""Pool memory across machines: push local task memory to a Session-Buddy, and search the
local history together with every session-buddy pool's.

sync is at-least-once and resumable: records are marked synced only after the peer took
them, batch by batch, and each carries its task id so a peer can drop a repeat (ours does).
search answers with whatever sources are reachable and names the ones that are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pools.errors import PoolError, PoolUnavailable
from pools.memory import memory_text
from pools.models import PoolType
from pools.peer_client import PeerClient

if TYPE_CHECKING:
    from pools.manager import PoolManager

PARALLEL_PUSHES = 5


class SyncReport(BaseModel):
    endpoint: str
    method: str | None = Field(default=None, description="store_conversation, or store_reflection as a fallback")
    pushed: int
    remaining: int
    batches: int
    error: str | None = None


class MemoryHit(BaseModel):
    source: str = Field(description="'local', a session-buddy pool's name, or a memory endpoint's URL")
    pool_id: str | None = None
    task_id: str | None = None
    task_type: str | None = None
    state: str | None = None
    text: str
    score: float | None = None


class SourceStatus(BaseModel):
    source: str
    ok: bool
    hits: int = 0
    error: str | None = None


class SearchReport(BaseModel):
    query: str
    results: list[MemoryHit]
    sources: list[SourceStatus]
    unreachable: list[str] = Field(description="Sources that did not answer; the results are without them.")


async def sync(manager: PoolManager, endpoint: str | None = None, batch_size: int = 50) -> SyncReport:
    import asyncio  # here, not at the top: the CLI imports this module for its models only

    endpoint = endpoint or manager.settings.memory_endpoint
    client = PeerClient(endpoint, await manager.peer_access(endpoint))  # refuses endpoints the operator did not allow
    memory = manager.store.memory
    try:
        tools = await client.tool_names()
    except PoolError as exc:
        return SyncReport(endpoint=endpoint, pushed=0, remaining=memory.count_unsynced(), batches=0, error=exc.message)
    method = next((t for t in ("store_conversation", "store_reflection") if t in tools), None)
    if method is None:
        return SyncReport(endpoint=endpoint, pushed=0, remaining=memory.count_unsynced(), batches=0,
                          error="the endpoint has neither store_conversation nor store_reflection")
    pushed = batches = 0
    gate = asyncio.Semaphore(PARALLEL_PUSHES)

    async def push(record: dict[str, Any]) -> str | None:
        meta = {"source": "mahavishnu", "task_id": record["task_id"], "pool_id": record["pool_id"],
                "pool_name": record["pool_name"], "task_type": record["task_type"], "state": record["state"],
                "duration_s": record["duration"]}
        args: dict[str, Any] = (
            {"content": memory_text(record), "project": "mahavishnu", "metadata": meta}
            if method == "store_conversation" else
            {"content": memory_text(record),
             "tags": ["mahavishnu", record["pool_id"], record["task_type"], record["state"]]})
        async with gate:
            reply = await client.call(method, args, timeout=30)
        if reply.is_error:
            raise PoolUnavailable(f"{method} refused a record: {reply.message}")
        return str(record["task_id"])

    error = None
    while True:
        records = memory.unsynced(batch_size)
        if not records:
            break
        outcomes = await asyncio.gather(*(push(r) for r in records), return_exceptions=True)
        done = [o for o in outcomes if isinstance(o, str)]
        memory.mark_synced(done)
        manager.store.commit()
        pushed += len(done)
        batches += 1
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:  # stop here; the next sync resumes with what is left
            first = failures[0]
            error = first.message if isinstance(first, PoolError) else f"{type(first).__name__}: {first}"
            break
    return SyncReport(endpoint=endpoint, method=method, pushed=pushed, remaining=memory.count_unsynced(),
                      batches=batches, error=error)


def _peer_hits(source: str, pool_id: str | None, data: dict[str, Any] | None, text: str) -> list[MemoryHit]:
    rows = (data or {}).get("results")
    if isinstance(rows, list):
        hits = []
        for row in rows:
            if not isinstance(row, dict):
                continue
            meta = row.get("metadata") or {}
            hits.append(MemoryHit(source=source, pool_id=pool_id, task_id=meta.get("task_id"),
                                  task_type=meta.get("task_type"), state=meta.get("state"),
                                  text=str(row.get("content", "")), score=row.get("score")))
        return hits
    # A text-only Session-Buddy (the released quick_search): "❌ No results found" is no hit, each
    # "📝 ..." line is one, and an answer in any other shape is one hit as a whole.
    if not text.strip() or "No results found" in text:
        return []
    lines = [line.removeprefix("📝").strip() for line in text.splitlines() if line.startswith("📝")]
    return [MemoryHit(source=source, pool_id=pool_id, text=line) for line in lines] or \
        [MemoryHit(source=source, pool_id=pool_id, text=text.strip())]


@dataclass
class _Source:
    name: str  # a session-buddy pool's name, or a memory endpoint's URL
    endpoint: str
    credential: str | None = None
    pool_id: str | None = None


async def _search_source(manager: PoolManager, source: _Source, query: str, limit: int) -> list[MemoryHit]:
    client = PeerClient(source.endpoint, await manager.peer_access(source.endpoint, source.credential))
    reply = await client.call("search_conversations", {"query": query, "limit": limit}, timeout=15)
    if reply.is_error and "search_conversations" in reply.message:
        # The released Session-Buddy (0.23) has no search_conversations; its quick_search takes
        # query, min_score and project, and refuses anything else (a limit, say).
        reply = await client.call("quick_search", {"query": query}, timeout=15)
    if reply.is_error:
        raise PoolUnavailable(reply.message)
    return _peer_hits(source.name, source.pool_id, reply.data, reply.text)


def _sources(manager: PoolManager) -> list[_Source]:
    """Every session-buddy pool, and every memory endpoint the operator configured (once each)."""
    sources = [_Source(p.name, p.endpoint, p.credential, p.pool_id)
               for p in manager.list_pools(pool_type=PoolType.SESSION_BUDDY) if p.endpoint]
    settings = manager.settings
    configured = list(settings.memory_endpoints)
    if "memory_endpoint" in settings.model_fields_set:  # the default one only when it was chosen
        configured.insert(0, settings.memory_endpoint)
    seen = {s.endpoint.rstrip("/") for s in sources}
    for endpoint in configured:
        if endpoint.rstrip("/") not in seen:
            seen.add(endpoint.rstrip("/"))
            sources.append(_Source(endpoint, endpoint))
    return sources


async def search(manager: PoolManager, query: str, limit: int = 20) -> SearchReport:
    import asyncio

    local = [MemoryHit(source="local", pool_id=r["pool_id"], task_id=r["task_id"], task_type=r["task_type"],
                       state=r["state"], text=memory_text(r), score=round(r["score"], 4))
             for r in manager.store.memory.search(query, limit)]
    sources = [SourceStatus(source="local", ok=True, hits=len(local))]
    peers = _sources(manager)
    answers = await asyncio.gather(*(_search_source(manager, p, query, limit) for p in peers),
                                   return_exceptions=True)
    results, seen = list(local), {h.task_id for h in local if h.task_id}
    unreachable = []
    for pool, answer in zip(peers, answers, strict=True):
        if isinstance(answer, BaseException):
            why = answer.message if isinstance(answer, PoolError) else f"{type(answer).__name__}: {answer}"
            sources.append(SourceStatus(source=pool.name, ok=False, error=why))
            unreachable.append(pool.name)
            continue
        fresh = [h for h in answer if not (h.task_id and h.task_id in seen)]
        seen.update(h.task_id for h in fresh if h.task_id)
        sources.append(SourceStatus(source=pool.name, ok=True, hits=len(answer)))
        results.extend(fresh)
    return SearchReport(query=query, results=results[: limit * (1 + len(peers))], sources=sources,
                        unreachable=unreachable)
