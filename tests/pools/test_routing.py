"""Routing one task to a pool."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from pools.errors import PoolUnavailable
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolStatus, RoutingStrategy, TaskState
from pools.routing import Candidate, Router
from tests.helpers.waiting import started_markers, wait_until

HELPERS = "tests.helpers.tasks"


def cand(pool_id: str, status: PoolStatus = PoolStatus.RUNNING, in_flight: int = 0, queued: int = 0,
         capacity: int = 2, refusal: str | None = None) -> Candidate:
    return Candidate(pool_id=pool_id, name=pool_id, status=status, status_reason=None, in_flight=in_flight,
                     queued=queued, capacity=capacity, refusal=refusal)


async def test_round_robin_is_fair_over_many_calls(manager: PoolManager) -> None:
    for name in ("a", "b", "c"):
        await manager.register(PoolConfig(name=name, min_workers=1, max_workers=1))
    picks = Counter(manager.route("echo", RoutingStrategy.ROUND_ROBIN).pool_name for _ in range(30))
    assert picks == {"a": 10, "b": 10, "c": 10}


async def test_least_loaded_prefers_a_small_idle_pool_over_a_big_busy_one(manager: PoolManager,
                                                                          gate: Path) -> None:
    await manager.register(PoolConfig(name="big", min_workers=4, max_workers=4))
    await manager.register(PoolConfig(name="small", min_workers=1, max_workers=2))
    for _ in range(4):
        await manager.submit("big", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
    await wait_until(lambda: len(started_markers(gate)) == 4, what="the big pool to be busy")
    decision = manager.route("echo")
    assert decision.pool_name == "small" and decision.strategy is RoutingStrategy.LEAST_LOADED
    assert "least loaded" in decision.reason
    done = await manager.execute(decision.pool_id, "echo", {"x": 1})
    assert done.state is TaskState.COMPLETED
    gate.touch()


async def test_affinity_sticks_and_falls_back_when_its_pool_is_unhealthy(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="p1", min_workers=1, max_workers=2))
    await manager.register(PoolConfig(name="p2", min_workers=1, max_workers=2))
    first = manager.route("echo", RoutingStrategy.AFFINITY, affinity_key="repo-42")
    assert not first.fallback
    for _ in range(10):
        again = manager.route("echo", RoutingStrategy.AFFINITY, affinity_key="repo-42")
        assert again.pool_id == first.pool_id and "stays" in again.reason
    await manager.close_pool(first.pool_id)
    moved = manager.route("echo", RoutingStrategy.AFFINITY, affinity_key="repo-42")
    assert moved.pool_id != first.pool_id and moved.fallback
    assert "is not healthy" in moved.reason
    assert manager.route("echo", RoutingStrategy.AFFINITY, affinity_key="repo-42").pool_id == moved.pool_id


@pytest.mark.parametrize("strategy", list(RoutingStrategy))
def test_no_strategy_ever_picks_an_unhealthy_pool(strategy: RoutingStrategy) -> None:
    router = Router(random.Random(7))
    pools = [cand("pool_ok"), cand("pool_degraded", PoolStatus.DEGRADED), cand("pool_failed", PoolStatus.FAILED),
             cand("pool_stopped", PoolStatus.STOPPED), cand("pool_refuses", refusal="cannot run shell"),
             cand("pool_ok2", in_flight=5, capacity=2)]
    router._affinity["k"] = "pool_degraded"  # the key's pool went bad since
    for _ in range(50):
        chosen = router.choose(pools, strategy, "echo", affinity_key="k").pool_id
        assert chosen in ("pool_ok", "pool_ok2")


def test_when_no_pool_qualifies_the_error_lists_each_pool_and_why() -> None:
    pools = [cand("pool_a", PoolStatus.DEGRADED), cand("pool_b", refusal="kubernetes cannot run 'python'")]
    with pytest.raises(PoolUnavailable) as info:
        Router().choose(pools, RoutingStrategy.LEAST_LOADED, "python")
    message = str(info.value)
    assert "pool_a (pool_a): status degraded" in message
    assert "pool_b (pool_b): kubernetes cannot run 'python'" in message
