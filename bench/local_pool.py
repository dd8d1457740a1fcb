"""2,000 trivial tasks through a 2-worker local pool vs ProcessPoolExecutor(2), same run.

    python bench/local_pool.py [--tasks 2000] [--runs 3]

Every task of ours is validated, given an id, recorded in the SQLite store (queued,
running, finished with its result) and awaited, as through the real product. All tasks
are submitted at once, as ProcessPoolExecutor.submit is called for all of them: each
submit returns its id only after the record is committed (concurrent submits share a
commit), and each wait returns only after the outcome is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ProcessPoolExecutor

from _common import report, scratch_dir

from pools.manager import PoolManager
from pools.models import PoolConfig, TaskState
from pools.settings import Settings


def trivial(x: int) -> int:
    return x


def baseline(n: int) -> float:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(trivial, range(50)))  # warm the workers, as our pool is warm
        start = time.perf_counter()
        futures = [pool.submit(trivial, i) for i in range(n)]
        for f in futures:
            f.result()
        return n / (time.perf_counter() - start)


async def ours(n: int) -> float:
    home = scratch_dir()
    async with PoolManager(Settings.load(home, default_pool=False)) as manager:
        await manager.register(PoolConfig(name="bench", min_workers=2, max_workers=2))
        for i in range(50):
            await manager.execute("bench", "echo", {"i": i})
        start = time.perf_counter()
        records = await asyncio.gather(*(manager.submit("bench", "echo", {"i": i}) for i in range(n)))
        for r in records:
            done = await manager.wait(r.task_id)
            assert done.state is TaskState.COMPLETED, done.error
        rate = n / (time.perf_counter() - start)
        await manager.durable()
        stored = manager.store._db.execute(
            "SELECT count(*) FROM tasks WHERE state = 'completed' AND result IS NOT NULL").fetchone()[0]
        assert stored == n + 50, f"only {stored} of {n + 50} tasks recorded"
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base, mine = [], []
    for _ in range(args.runs):
        base.append(baseline(args.tasks))
        mine.append(asyncio.run(ours(args.tasks)))
    ratio = report(f"{args.tasks} trivial tasks, 2 workers (median of {args.runs} runs)",
                   "mahavishnu local pool (stored)", mine, "ProcessPoolExecutor(2)", base)
    low = min(m / b for m, b in zip(mine, base, strict=True))
    print(f"  lowest run ratio: {low:.2f}x; target median >= 1.0x, no run under 0.8x: "
          f"{'met' if ratio >= 1.0 and low >= 0.8 else 'NOT met'}")


if __name__ == "__main__":
    main()
