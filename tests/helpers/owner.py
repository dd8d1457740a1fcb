"""A separate process that owns a state directory, for kill -9 tests.

Usage: python -m tests.helpers.owner HOME GATE
Prints one JSON line (worker pids, task ids) once its tasks are running, then waits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pools.manager import PoolManager
from pools.models import PoolConfig
from pools.settings import Settings
from tests.helpers.waiting import started_markers, wait_until


async def main(home: Path, gate: Path) -> None:
    settings = Settings.load(home, enabled_task_types=["analyze", "echo", "python"], default_pool=False)
    manager = PoolManager(settings)
    await manager.start()
    await manager.register(PoolConfig(name="solo", min_workers=1, max_workers=1))
    await manager.register(PoolConfig(name="pair", min_workers=2, max_workers=2))
    running = await manager.submit("solo", "python", {"target": "tests.helpers.tasks:wait_for_file",
                                                      "args": [str(gate)]})
    queued = await manager.submit("solo", "echo", {"items": [1, 2]})
    await wait_until(lambda: len(started_markers(gate)) == 1, what="the blocking task to start")
    manager.store.commit()
    pids = [w.pid for p in ("solo", "pair") for w in manager.get_pool(p).worker_details]
    print(json.dumps({"pids": pids, "running": running.task_id, "queued": queued.task_id}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
