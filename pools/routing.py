"""Choosing a pool for a task.

Only healthy pools (running or scaling) that accept the task type are candidates. Load is
(in-flight + queued) / capacity, where capacity is what the pool can run at once at its
largest (max_workers), so a small idle pool beats a big busy one.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from pools.errors import PoolUnavailable
from pools.models import PoolStatus, PoolType, RouteDecision, RoutingStrategy, SkippedPool

HEALTHY = (PoolStatus.RUNNING, PoolStatus.SCALING)


@dataclass(frozen=True)
class Candidate:
    pool_id: str
    name: str
    status: PoolStatus
    status_reason: str | None
    in_flight: int
    queued: int
    capacity: int
    refusal: str | None  # why the pool cannot run this task type, if it cannot

    @property
    def load(self) -> float:
        return (self.in_flight + self.queued) / max(1, self.capacity)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_flight - self.queued)


def eligible(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[SkippedPool]]:
    ok, skipped = [], []
    for c in candidates:
        if c.status not in HEALTHY:
            why = f"status {c.status.value}" + (f" ({c.status_reason})" if c.status_reason else "")
            skipped.append(SkippedPool(pool_id=c.pool_id, name=c.name, reason=why))
        elif c.refusal:
            skipped.append(SkippedPool(pool_id=c.pool_id, name=c.name, reason=c.refusal))
        else:
            ok.append(c)
    return ok, skipped


def no_candidates_error(task_type: str, skipped: list[SkippedPool], pool_type: PoolType | None = None,
                        others: int = 0) -> PoolUnavailable:
    if not skipped and pool_type is not None:
        rest = f", only {others} pool{'' if others == 1 else 's'} of other types" if others else ""
        return PoolUnavailable(f"there are no {pool_type.value} pools (`pool_filter` {pool_type.value}){rest}; "
                               f"register one with `mahavishnu pools register --type {pool_type.value}`",
                               field="pool_filter")
    if not skipped:
        return PoolUnavailable("there are no pools; register one with `mahavishnu pools register`", field="pool")
    detail = "; ".join(f"{s.name} ({s.pool_id}): {s.reason}" for s in skipped)
    return PoolUnavailable(f"no healthy pool accepts task type {task_type!r}: {detail}", field="pool")


class Router:
    """Routing state that must outlive one call: the round-robin cursor and affinity map."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._cursor = 0
        self._affinity: dict[str, str] = {}
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[Candidate], strategy: RoutingStrategy, task_type: str,
               affinity_key: str | None = None) -> RouteDecision:
        ok, skipped = eligible(candidates)
        if not ok:
            raise no_candidates_error(task_type, skipped)
        ok.sort(key=lambda c: c.pool_id)  # a stable order makes round-robin fair across calls
        fallback = False
        if strategy is RoutingStrategy.AFFINITY:
            if not affinity_key:
                raise PoolUnavailable("the affinity strategy needs an affinity key", field="affinity_key")
            previous = self._affinity.get(affinity_key)
            kept = next((c for c in ok if c.pool_id == previous), None)
            if kept is not None:
                chosen, reason = kept, f"affinity key {affinity_key!r} stays on this pool"
            else:
                chosen = min(ok, key=lambda c: (c.load, zlib.crc32(f"{affinity_key}{c.pool_id}".encode())))
                fallback = previous is not None
                reason = (f"affinity key {affinity_key!r} moved here: its pool {previous} is not healthy"
                          if fallback else f"affinity key {affinity_key!r} first placed on the least loaded pool")
            self._affinity[affinity_key] = chosen.pool_id
        elif strategy is RoutingStrategy.ROUND_ROBIN:
            chosen = ok[self._cursor % len(ok)]
            self._cursor += 1
            reason = f"round robin over {len(ok)} healthy pool(s)"
        elif strategy is RoutingStrategy.RANDOM:
            chosen = self._rng.choice(ok)
            reason = f"random choice among {len(ok)} healthy pool(s)"
        else:
            chosen = min(ok, key=lambda c: (c.load, -c.free, c.pool_id))
            reason = (f"least loaded: {chosen.in_flight + chosen.queued} task(s) on capacity {chosen.capacity} "
                      f"(load {chosen.load:.2f})")
        return RouteDecision(pool_id=chosen.pool_id, pool_name=chosen.name, strategy=strategy, reason=reason,
                             fallback=fallback, load=round(chosen.load, 4), skipped=skipped)
