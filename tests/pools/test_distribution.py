"""One payload over many pools, with real worker processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from pools.errors import PoolUnavailable
from pools.manager import PoolManager
from pools.models import DistributionStrategy, PoolConfig, PoolType, RebalanceStrategy, TaskState
from tests.conftest import make_settings
from tests.helpers.waiting import wait_until

GATE_TYPE = {"gate": "tests.helpers.gate_type:GateTask"}


@pytest.fixture
async def gated(home: Path) -> PoolManager:
    settings = make_settings(home, enabled_task_types=["analyze", "echo", "python", "gate"],
                             task_type_refs=GATE_TYPE)
    manager = PoolManager(settings)
    await manager.start()
    yield manager  # type: ignore[misc]
    await manager.close()


def started(gate: Path) -> int:
    return len(list(gate.parent.glob(gate.name + ".started.*")))


async def test_map_reduce_of_analyze_equals_a_single_pool_run(manager: PoolManager, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    for i in range(7):
        (src / f"m{i}.py").write_text(f"import os\nimport sys\nx{i} = undefined_{i}\n")
    (src / "pkg" / "ok.py").write_text("VALUE = 1\n")
    await manager.register(PoolConfig(name="one", min_workers=1, max_workers=2))
    await manager.register(PoolConfig(name="two", min_workers=1, max_workers=2))
    single = await manager.execute("one", "analyze", {"files": [str(src)]})
    assert single.state is TaskState.COMPLETED
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    out = await manager.distribute("analyze", {"files": [str(src)]}, DistributionStrategy.MAP_REDUCE,
                                   progress=on_progress)
    assert out.failed == 0 and out.successful == out.total == 8
    assert {s.pool_name for s in out.shards} == {"one", "two"}
    assert out.result == single.result
    assert out.result["count"] == 21 and out.summary == "Analysis complete: 21 issues found in 8 file(s)"
    assert progress[-1] == (8, 8) and [d for d, _ in progress] == sorted(d for d, _ in progress)


async def test_broadcast_sends_the_whole_payload_to_every_pool(manager: PoolManager) -> None:
    for name in ("x", "y", "z"):
        await manager.register(PoolConfig(name=name, min_workers=1, max_workers=1))
    out = await manager.distribute("echo", {"items": [1, 2, 3]}, DistributionStrategy.BROADCAST)
    assert out.total == 3 and out.successful == 3
    assert sorted(s.pool_name for s in out.shards) == ["x", "y", "z"]
    assert all(s.result == {"echo": {"items": [1, 2, 3]}, "count": 3} for s in out.shards)


@pytest.mark.parametrize("strategy", [DistributionStrategy.ROUND_ROBIN, DistributionStrategy.RANDOM,
                                      DistributionStrategy.LEAST_LOADED])
async def test_shard_strategies_cover_every_item_once(manager: PoolManager,
                                                      strategy: DistributionStrategy) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=2))
    await manager.register(PoolConfig(name="q", min_workers=1, max_workers=2))
    out = await manager.distribute("echo", {"items": list(range(100))}, strategy)
    assert out.failed == 0
    items = sorted(i for s in sorted(out.shards, key=lambda s: s.index) for i in s.result["echo"]["items"])
    assert items == list(range(100))
    if strategy is DistributionStrategy.ROUND_ROBIN:
        names = [s.pool_name for s in sorted(out.shards, key=lambda s: s.index)]
        assert names[:4] == [names[0], names[1], names[0], names[1]] and names[0] != names[1]


async def test_pool_filter_limits_the_pools(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="only", min_workers=1, max_workers=1))
    out = await manager.distribute("echo", {"items": [1, 2]}, DistributionStrategy.BROADCAST,
                                   pool_type=PoolType.MAHAVISHNU)
    assert out.total == 1
    with pytest.raises(PoolUnavailable, match=r"there are no kubernetes pools \(`pool_filter` kubernetes\), only 1 "
                                              "pool of other types") as refused:
        await manager.distribute("echo", {"items": [1]}, pool_type=PoolType.KUBERNETES)
    assert refused.value.field == "pool_filter"


async def test_a_pool_killed_mid_distribution_has_its_shards_retried_elsewhere(gated: PoolManager,
                                                                               gate: Path) -> None:
    await gated.register(PoolConfig(name="doomed", min_workers=2, max_workers=2))
    await gated.register(PoolConfig(name="steady", min_workers=2, max_workers=4))
    import asyncio

    run = asyncio.ensure_future(gated.distribute("gate", {"gate": str(gate), "items": [1, 2, 3, 4]},
                                                 DistributionStrategy.ROUND_ROBIN))
    await wait_until(lambda: started(gate) == 4, what="all four shards to start")
    for worker in gated.get_pool("doomed").worker_details:
        assert worker.pid
        os.kill(worker.pid, signal.SIGKILL)
    await wait_until(lambda: started(gate) == 6, what="the lost shards to restart on the other pool")
    gate.touch()
    out = await asyncio.wait_for(run, 60)
    assert (out.total, out.successful, out.failed, out.retried) == (4, 4, 0, 2)
    retried = [s for s in out.shards if s.retried_from]
    assert all(s.pool_name == "steady" and s.retried_from == ["doomed"] and s.attempts == 2 for s in retried)
    assert sorted(x for s in out.shards for x in s.result["doubled"]) == [2, 4, 6, 8]


async def test_a_task_that_fails_by_itself_is_not_retried(manager: PoolManager, tmp_path: Path) -> None:
    await manager.register(PoolConfig(name="a", min_workers=1, max_workers=1))
    await manager.register(PoolConfig(name="b", min_workers=1, max_workers=1))
    missing = [str(tmp_path / "missing" / "a.py"), str(tmp_path / "missing" / "b.py")]
    out = await manager.distribute("analyze", {"files": missing},
                                   DistributionStrategy.ROUND_ROBIN)
    assert out.failed == 2 and out.retried == 0
    assert all("no such file" in (s.error or "") for s in out.shards)


async def test_rebalance_moves_queued_tasks_to_pools_with_room(gated: PoolManager, gate: Path) -> None:
    await gated.register(PoolConfig(name="busy", min_workers=1, max_workers=1))
    await gated.register(PoolConfig(name="roomy", min_workers=1, max_workers=3))
    tasks = [await gated.submit("busy", "gate", {"gate": str(gate), "items": [i]}) for i in range(4)]
    await wait_until(lambda: started(gate) == 1, what="the first task to run")
    report = await gated.rebalance()
    assert len(report.moved) == 3 and all(m.from_pool == "busy" and m.to_pool == "roomy" for m in report.moved)
    # roomy grows to its demand: by its own queue-driven scaling or the rebalance resize
    assert gated.get_pool("roomy").workers == 3
    gate.touch()
    finished = [await gated.wait(t.task_id, 30) for t in tasks]
    assert all(f.state is TaskState.COMPLETED for f in finished)
    roomy = gated.resolve("roomy").pool_id
    assert {f.task_id for f in finished if f.pool_id == roomy} == {m.task_id for m in report.moved}
    again = await gated.rebalance()
    assert again.moved == []


@pytest.mark.parametrize("strategy", [RebalanceStrategy.ROUND_ROBIN, RebalanceStrategy.RANDOM])
async def test_rebalance_spreads_queued_work_by_its_strategy(gated: PoolManager, gate: Path,
                                                             strategy: RebalanceStrategy) -> None:
    await gated.register(PoolConfig(name="busy", min_workers=1, max_workers=1))
    await gated.register(PoolConfig(name="a", min_workers=1, max_workers=2))
    await gated.register(PoolConfig(name="b", min_workers=1, max_workers=2))
    tasks = [await gated.submit("busy", "gate", {"gate": str(gate), "items": [i]}) for i in range(5)]
    await wait_until(lambda: started(gate) == 1, what="the first task to hold busy's only worker")
    report = await gated.rebalance(strategy)
    assert report.strategy is strategy and all(m.from_pool == "busy" for m in report.moved)
    targets = [m.to_pool for m in report.moved]
    assert len(targets) == 4 and set(targets) <= {"a", "b"}
    if strategy is RebalanceStrategy.ROUND_ROBIN:
        assert targets.count("a") == targets.count("b") == 2 and targets[0] != targets[1]
    gate.touch()
    finished = {t.task_id: await gated.wait(t.task_id, 30) for t in tasks}
    assert all(f.state is TaskState.COMPLETED for f in finished.values())
    for move in report.moved:  # each ran where it was moved
        assert finished[move.task_id].pool_id == gated.resolve(move.to_pool).pool_id


async def test_large_fan_out_uses_a_bounded_number_of_shards(home: Path) -> None:
    async with PoolManager(make_settings(home)) as m:
        await m.register(PoolConfig(name="a", min_workers=2, max_workers=2))
        await m.register(PoolConfig(name="b", min_workers=2, max_workers=2))
        seen: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            seen.append(done)

        out = await m.distribute("echo", {"items": list(range(100_000))}, DistributionStrategy.MAP_REDUCE,
                                 progress=on_progress)
        assert out.result["count"] == 100_000 and out.result["echo"]["items"][-1] == 99_999
        assert out.total <= 4 * 4 and out.failed == 0  # shards scale with capacity, not with items
        assert seen[-1] == out.total
        assert m.stats().tasks_completed == out.total


async def test_rebalance_sizes_idle_local_pools_down_to_demand(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="wide", min_workers=1, max_workers=3))
    await manager.scale_pool("wide", 3)
    report = await manager.rebalance()
    assert [(r.pool, r.from_workers, r.to_workers) for r in report.resized] == [("wide", 3, 1)]
    assert manager.get_pool("wide").workers == 1


def committed_tasks(home: Path, task_ids: list[str]) -> dict[str, tuple[str, Any, Any]]:
    """What another connection reads of these tasks: only what is committed, (state, payload, result)."""
    import json
    import sqlite3

    db = sqlite3.connect(home / "mahavishnu.db")
    try:
        rows = db.execute(f"SELECT task_id, state, payload, result FROM tasks WHERE task_id IN "
                          f"({', '.join('?' * len(task_ids))})", task_ids).fetchall()
    finally:
        db.close()
    return {r[0]: (r[1], json.loads(r[2]), None if r[3] is None else json.loads(r[3])) for r in rows}


async def test_map_reduce_keeps_item_order_and_every_shard_is_committed_when_it_returns(
        home: Path, manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="left", min_workers=1, max_workers=1))
    await manager.register(PoolConfig(name="right", min_workers=1, max_workers=1))
    items = [f"item-{i}" if i % 3 else {"n": i, "é": [i, None]} for i in range(2_000)]
    out = await manager.distribute("echo", {"items": items}, DistributionStrategy.MAP_REDUCE)
    assert (out.failed, out.successful) == (0, out.total) and out.total > 2
    assert out.result == {"echo": {"items": items}, "count": 2_000}  # every item once, in order
    assert [s.index for s in out.shards] == list(range(out.total))
    assert {s.pool_name for s in out.shards} == {"left", "right"}
    ids = [s.task_id for s in out.shards]
    assert all(ids) and len(set(ids)) == out.total
    stored = committed_tasks(home, ids)  # read before anything else could commit them
    assert set(stored) == set(ids)
    shard_items = []
    for task_id in ids:
        state, payload, result = stored[task_id]
        assert state == "completed" and result == {"echo": payload, "count": len(payload["items"])}
        shard_items.extend(payload["items"])
    assert shard_items == items
    listed = {t.task_id: t for t in manager.list_tasks(task_type="echo", limit=100)}
    assert all(listed[i].state is TaskState.COMPLETED for i in ids)


async def test_a_failed_shard_is_reported_and_the_rest_reduced(home: Path, gated: PoolManager, gate: Path) -> None:
    await gated.register(PoolConfig(name="a", min_workers=1, max_workers=1))
    await gated.register(PoolConfig(name="b", min_workers=1, max_workers=1))
    gate.touch()
    items = list(range(1, 17))
    items[9] = -1  # one shard fails by itself
    out = await gated.distribute("gate", {"gate": str(gate), "items": items}, DistributionStrategy.MAP_REDUCE)
    failed = [s for s in out.shards if s.state is not TaskState.COMPLETED]
    assert len(failed) == 1 and (out.failed, out.successful, out.retried) == (1, out.total - 1, 0)
    assert failed[0].state is TaskState.FAILED and "negative item" in (failed[0].error or "")
    stored = committed_tasks(home, [s.task_id for s in out.shards if s.task_id])  # the failure is committed too
    assert len(stored) == out.total
    assert {task_id: state for task_id, (state, _, _) in stored.items()} == {
        s.task_id: ("failed" if s is failed[0] else "completed") for s in out.shards}
    assert failed[0].task_id and gated.get_task(failed[0].task_id).state is TaskState.FAILED
    kept = [i for s in out.shards if s is not failed[0]
            for i in gated.get_task(s.task_id).payload["items"]]  # type: ignore[arg-type]
    assert out.result == {"doubled": [2 * i for i in kept]} and -1 not in kept and len(kept) < len(items)
