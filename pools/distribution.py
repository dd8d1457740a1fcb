"""One payload over many pools: round_robin, broadcast, random, least_loaded, map_reduce.

    payload ──split(n)──> shards ──assign (strategy)──> pool.submit ──> wait ──┬─> ShardResult
                                   ▲                                          │
                                   └──── pool failed it: next healthy pool ◄──┘
    map_reduce: reduce(shard results, in shard order) ──> one result

At most `in_flight` shards are outstanding at a time, so a 100,000-item payload does not
become 100,000 queued tasks: the task type's split makes a bounded number of shards (a few
per worker of capacity) and each carries a batch of items to one worker.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pools.errors import InvalidInput, PoolError
from pools.models import (
    DistributionResult,
    DistributionStrategy,
    PoolType,
    RoutingStrategy,
    ShardResult,
    TaskOptions,
    TaskState,
)
from pools.routing import Candidate, eligible, no_candidates_error

if TYPE_CHECKING:
    from pools.manager import PoolManager

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
# Shards per unit of capacity: each worker holds the next shard while it runs one. Every shard
# costs the server a task's bookkeeping, a hand-over and a wake-up; 4 per slot (half of them
# placed as slots free up) made a 20,000-item echo map_reduce over two 1-worker pools about
# 1.5 ms slower in 21 ms than 2 (bench/distribute.py, server CPU 12.5 vs 11 ms per call).
SHARDS_PER_SLOT = 2


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    return None


class Distribution:
    def __init__(self, manager: PoolManager, task_type: str, payload: dict[str, Any],
                 strategy: DistributionStrategy, pool_type: PoolType | None, timeout: float,
                 progress: Progress | None = None, rng: random.Random | None = None) -> None:
        self.m = manager
        self.task_type = task_type
        self.strategy = strategy
        self.pool_type = pool_type
        self.timeout = timeout
        self.progress = progress or _no_progress
        self.rng = rng or random.Random()
        self.tt = manager.task_types.get(task_type)
        self.payload = self.tt.validate_payload(payload)
        self.failed_pools: set[str] = set()
        self._task_ids: set[str] = set()
        self.group = f"dist_{uuid.uuid4().hex}"  # its shards on one Kubernetes pool share an Indexed Job

    def _candidates(self) -> list[Candidate]:
        ok, _ = eligible(self.m.candidates(self.task_type, self.pool_type))
        return [c for c in ok if c.pool_id not in self.failed_pools]

    async def run(self) -> DistributionResult:
        started = time.monotonic()
        ok, skipped = eligible(self.m.candidates(self.task_type, self.pool_type))
        if not ok:
            raise no_candidates_error(self.task_type, skipped, self.pool_type,
                                      len(self.m.candidates(None)) if self.pool_type else 0)
        ok.sort(key=lambda c: c.pool_id)
        if self.strategy is DistributionStrategy.BROADCAST:
            await self.m.check_file_inputs(self.tt, self.payload)  # split checks the shards' paths itself
            plan: list[tuple[dict[str, Any], Candidate | None]] = [(self.payload, c) for c in ok]
        else:
            n = max(len(ok), SHARDS_PER_SLOT * sum(c.capacity for c in ok))
            try:  # a split that reads files (it may walk directories) runs in a thread, never on the loop
                shards = (await asyncio.to_thread(self.tt.split, self.payload, n) if self.tt.file_inputs(self.payload)
                          else self.tt.split(self.payload, n))
            except (OSError, ValueError) as exc:  # outside the roots, missing, over a cap
                raise InvalidInput(f"cannot split the payload: {exc}", field="payload") from exc
            plan = [(shard, self._static_pool(i, ok)) for i, shard in enumerate(shards)]
        total = len(plan)
        limit = max(1, sum(c.capacity for c in ok) * 2)
        gate = asyncio.Semaphore(limit)
        done = 0
        await self.progress(0, total, f"0/{total} shards on {len(ok)} pool(s)")

        async def one(index: int, shard: dict[str, Any], pool: Candidate | None) -> ShardResult:
            nonlocal done
            async with gate:
                outcome = await self._run_shard(index, shard, pool, deadline)
            done += 1
            await self.progress(done, total, f"{done}/{total} shards")
            return outcome

        deadline = started + self.timeout + 5.0
        jobs = [asyncio.ensure_future(one(i, shard, pool)) for i, (shard, pool) in enumerate(plan)]
        try:
            results = await asyncio.gather(*jobs)
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
        await self.m.store.durable()  # every shard, payload and outcome, committed before the answer
        return self._result(results, ok, time.monotonic() - started)

    def _static_pool(self, index: int, ok: list[Candidate]) -> Candidate | None:
        """round_robin and random fix each shard's pool up front; the others pick at dispatch."""
        if self.strategy is DistributionStrategy.ROUND_ROBIN:
            return ok[index % len(ok)]
        if self.strategy is DistributionStrategy.RANDOM:
            return self.rng.choice(ok)
        return None

    async def _run_shard(self, index: int, shard: dict[str, Any], pool: Candidate | None,
                         deadline: float) -> ShardResult:
        tried: list[str] = []
        while True:
            if pool is None or pool.pool_id in self.failed_pools:
                options = self._candidates()
                if not options:
                    why = f"every pool failed it ({', '.join(tried)})" if tried else "no healthy pool left"
                    return ShardResult(index=index, pool_id="", pool_name="", state=TaskState.FAILED,
                                       error=why, attempts=len(tried), retried_from=tried)
                decision = self.m.router.choose(options, RoutingStrategy.LEAST_LOADED, self.task_type)
                pool = next(c for c in options if c.pool_id == decision.pool_id)
            try:
                # Not durable yet: its id reaches the caller only with its outcome, which wait() commits.
                record = await self.m.submit(pool.pool_id, self.task_type, shard,
                                             TaskOptions(timeout=self.timeout), durable=False, group=self.group,
                                             shard=True)
            except PoolError as exc:  # the pool cannot take work now: it failed, try another
                self.failed_pools.add(pool.pool_id)
                tried.append(pool.name)
                self.m.note_pool_failure(pool.pool_id, exc.message)
                pool = None
                continue
            self._task_ids.add(record.task_id)
            # Not committed one by one either: run() commits every shard's outcome at once.
            record = await self.m.wait(record.task_id, max(0.0, deadline - time.monotonic()), durable=False)
            if not record.state.terminal:
                await self.m.cancel(record.task_id)
                record = self.m.get_task(record.task_id)
                record.error = f"did not finish within {self.timeout:g}s; cancelled"
            if record.state is not TaskState.COMPLETED and record.pool_fault and \
                    self.strategy is not DistributionStrategy.BROADCAST:
                self.failed_pools.add(pool.pool_id)
                tried.append(pool.name)
                pool = None
                continue
            return ShardResult(index=index, pool_id=record.pool_id, pool_name=self.m.pool_name(record.pool_id),
                               task_id=record.task_id, state=record.state, duration_s=record.duration_s,
                               error=record.error, summary=record.summary, attempts=len(tried) + 1,
                               retried_from=tried, result=record.result)

    def _result(self, shards: list[ShardResult], ok: list[Candidate], elapsed: float) -> DistributionResult:
        successful = sum(1 for s in shards if s.state is TaskState.COMPLETED)
        reduced = None
        summary = None
        if self.strategy is DistributionStrategy.MAP_REDUCE and successful:
            reduced = self.tt.reduce([s.result for s in shards if s.state is TaskState.COMPLETED])
            summary = self.tt.summarize(reduced)
            for s in shards:  # the reduced result carries them; do not send everything twice
                s.result = None
        return DistributionResult(
            strategy=self.strategy, task_type=self.task_type, pools=[c.name for c in ok], total=len(shards),
            successful=successful, failed=len(shards) - successful,
            retried=sum(1 for s in shards if s.retried_from), duration_s=round(elapsed, 4), shards=shards,
            result=reduced, summary=summary)
