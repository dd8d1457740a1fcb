"""Listing and stats with a million stored tasks: the hot queries stay on indexes and counters.

    python bench/store_scale.py [--tasks 1000000]

Baseline in the same run: the same store's queries with 1,000 tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from _common import ROOT, scratch_dir  # noqa: F401 - ROOT puts the project on sys.path

from pools.manager import PoolManager
from pools.models import PoolConfig, TaskState
from pools.settings import Settings


def fill(manager: PoolManager, pool_id: str, n: int) -> None:
    now = time.time()
    rows = ((f"task_{uuid.uuid4().hex}", pool_id, "echo", "{}", "completed", "worker_1", now - i, now - i,
             now - i + 0.01, 0.01, '{"count": 1}', "Echoed 1 item(s)", None, 300.0, 1, 0)
            for i in range(n))
    db = manager.store._db
    db.execute("BEGIN")
    db.executemany("INSERT INTO tasks (task_id, pool_id, task_type, payload, state, worker_id, created_at, "
                   "started_at, finished_at, duration, result, summary, error, timeout, attempts, retries) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("UPDATE pools SET completed = completed + ?, duration_sum = duration_sum + ?, duration_n = "
               "duration_n + ? WHERE pool_id = ?", (n, n * 0.01, n, pool_id))
    db.execute("COMMIT")


def timed_ms(fn: object, repeat: int = 20) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


async def measure(n: int) -> dict[str, float]:
    home = scratch_dir()
    async with PoolManager(Settings.load(home, default_pool=False)) as m:
        pool = await m.register(PoolConfig(name="big", min_workers=1, max_workers=1))
        fill(m, pool.pool_id, n)
        last = m.list_tasks(limit=1)[0].task_id
        return {
            "pools list": timed_ms(lambda: m.list_pools()),
            "stats": timed_ms(lambda: m.stats()),
            "tasks (20 newest)": timed_ms(lambda: m.list_tasks(limit=20)),
            "tasks of a pool, running": timed_ms(lambda: m.list_tasks(pool="big", state=TaskState.RUNNING)),
            "task by id": timed_ms(lambda: m.get_task(last)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    small = asyncio.run(measure(1_000))
    big = asyncio.run(measure(args.tasks))
    print(f"query latency, median ms: 1,000 tasks vs {args.tasks:,} tasks stored")
    for name in small:
        print(f"  {name:<28} {small[name]:8.3f}   {big[name]:8.3f}   ratio {big[name] / small[name]:.2f}x")


if __name__ == "__main__":
    main()
