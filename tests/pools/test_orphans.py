"""No process a task starts outlives it: an orphan census after each way a task or worker ends.

The census finds every process whose environment marks it as started for this process's
pools (the marker is inherited by everything a task starts, setsid and daemons included)
and subtracts the live workers. It must reach zero after each case.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil
import pytest

from pools.manager import PoolManager
from pools.models import PoolConfig, TaskOptions, TaskState
from tests.conftest import make_settings
from tests.helpers.census import orphans, zombies
from tests.helpers.waiting import gone, started_markers, wait_until

HELPERS = "tests.helpers.tasks"


def live_workers(manager: PoolManager) -> set[int]:
    return {w.pid for p in manager.list_pools() for w in manager.get_pool(p.name).worker_details if w.pid}


async def no_orphans(manager: PoolManager, what: str) -> None:
    await wait_until(lambda: not orphans(os.getpid(), live_workers(manager)),
                     what=f"no orphans after {what}: {orphans(os.getpid(), live_workers(manager))}")


@pytest.mark.parametrize("target", ["leave_background_child", "leave_setsid_child", "leave_daemon"])
async def test_what_a_completed_task_leaves_running_is_killed(manager: PoolManager, tmp_path: Path,
                                                              target: str) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    pidfile = tmp_path / "child.pid"
    done = await manager.execute("p", "python", {"target": f"{HELPERS}:{target}", "args": [str(pidfile)]})
    assert done.state is TaskState.COMPLETED, done.error
    child = int(pidfile.read_text())
    await wait_until(lambda: gone(child), what=f"the {target} child to be killed after the task")
    await no_orphans(manager, target)
    again = await manager.execute("p", "echo", {"x": 1})  # the same worker goes on
    assert again.state is TaskState.COMPLETED


async def test_a_crashed_worker_leaves_nothing(manager: PoolManager, tmp_path: Path) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    pidfile = tmp_path / "daemon.pid"
    done = await manager.execute("p", "python", {"target": f"{HELPERS}:daemon_then_exit",
                                                 "args": [str(pidfile), 9]})
    assert done.state is TaskState.FAILED and "exit code 9" in (done.error or "")
    await wait_until(lambda: gone(int(pidfile.read_text())), what="the crashed worker's daemon to be killed")
    await no_orphans(manager, "a worker crash")


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_stopped_task_leaves_nothing(manager: PoolManager, tmp_path: Path, gate: Path, how: str) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    pidfile = tmp_path / "daemon.pid"
    task = await manager.submit("p", "python", {"target": f"{HELPERS}:daemon_then_wait",
                                                "args": [str(pidfile), str(gate)]},
                                TaskOptions(timeout=3 if how == "timeout" else 300))
    await wait_until(lambda: bool(started_markers(gate)), what="the task to start its daemon and block")
    if how == "cancel":
        await manager.cancel(task.task_id)
    done = await manager.wait(task.task_id, 60)
    assert done.state is (TaskState.TIMED_OUT if how == "timeout" else TaskState.CANCELLED)
    await wait_until(lambda: gone(int(pidfile.read_text())), what=f"the daemon to be killed on {how}")
    await no_orphans(manager, how)


async def test_scaled_down_and_idle_reaped_workers_leave_nothing(home: Path, tmp_path: Path, gate: Path) -> None:
    async with PoolManager(make_settings(home, idle_timeout_s=0.2)) as manager:
        await manager.register(PoolConfig(name="s", min_workers=1, max_workers=3))
        await manager.scale_pool("s", 3)
        keepers = parents(live_workers(manager))
        for i in range(6):
            await manager.execute("s", "python", {"target": f"{HELPERS}:leave_setsid_child",
                                                  "args": [str(tmp_path / f"c{i}.pid")]})
        await manager.scale_pool("s", 1)
        await no_orphans(manager, "a scale down")

        # A burst grows a min-0 pool to 3 workers; idle, they are reaped down to none.
        await manager.register(PoolConfig(name="i", min_workers=0, max_workers=3))
        burst = [await manager.submit("i", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
                 for _ in range(3)]
        await wait_until(lambda: len(started_markers(gate)) == 3, what="three workers running the burst")
        keepers |= parents(live_workers(manager))
        gate.touch()
        for task in burst:
            assert (await manager.wait(task.task_id, 60)).state is TaskState.COMPLETED
        await wait_until(lambda: manager.get_pool("i").workers == 0, what="the idle workers to be reaped")
        await no_orphans(manager, "an idle reap")
        await wait_until(lambda: not set(zombies(os.getpid())) & keepers, what="every stopped worker reaped")


def parents(pids: set[int]) -> set[int]:
    """The keepers of these workers (each worker's parent process)."""
    out = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.add(psutil.Process(pid).ppid())
    return out
