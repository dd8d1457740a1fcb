"""What happens when the process that owns pools dies or closes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from pools.manager import PoolManager
from pools.models import PoolConfig, TaskState
from tests.conftest import make_settings
from tests.helpers.waiting import gone, wait_until_sync

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_of_the_owner_leaves_no_workers_and_is_reconciled(home: Path, gate: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-m", "tests.helpers.owner", str(home), str(gate)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the owner process did not report"
        info = json.loads(line)
        assert len(info["pids"]) == 3 and all(psutil.pid_exists(p) for p in info["pids"])
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
    finally:
        owner.kill()
    wait_until_sync(lambda: all(gone(p) for p in info["pids"]), what="the dead owner's workers to exit")

    import asyncio

    async def reconcile() -> tuple[TaskState, str | None, TaskState, object]:
        async with PoolManager(make_settings(home)) as m:
            failed = m.get_task(info["running"])
            requeued = await m.wait(info["queued"], 30)
            return failed.state, failed.error, requeued.state, requeued.result

    state, error, requeued_state, result = asyncio.run(reconcile())
    assert state is TaskState.FAILED
    assert "exited before it finished" in (error or "") and "not idempotent" in (error or "")
    assert requeued_state is TaskState.COMPLETED and result == {"echo": {"items": [1, 2]}, "count": 2}


async def test_close_stops_every_worker(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="a", min_workers=2, max_workers=2))
    pids = [w.pid for w in manager.get_pool("a").worker_details if w.pid]
    assert len(pids) == 2
    closed = await manager.close_pool("a")
    assert closed.status.value == "stopped"
    assert all(gone(p) for p in pids)
    assert manager.list_pools() == []
    # the name is free again
    await manager.register(PoolConfig(name="a", min_workers=1, max_workers=1))


def test_a_second_owner_is_refused_while_the_first_lives(home: Path) -> None:
    import asyncio

    from pools.errors import StoreBusy
    from pools.lock import HomeLock

    first = HomeLock(home)
    first.acquire()
    try:
        second = HomeLock(home)
        try:
            second.acquire(wait=0.2)
        except StoreBusy as exc:
            assert str(os.getpid()) in str(exc)
        else:  # pragma: no cover
            raise AssertionError("a second owner got the lock")
    finally:
        first.release()
    asyncio.run(_start_and_close(home))


async def _start_and_close(home: Path) -> None:
    async with PoolManager(make_settings(home)):
        pass


async def test_a_running_idempotent_task_is_rerun_after_a_restart(home: Path, gate: Path) -> None:
    settings = make_settings(home, enabled_task_types=["gate"], task_type_refs={
        "gate": "tests.helpers.gate_type:GateTask"})
    async with PoolManager(settings) as first:
        await first.register(PoolConfig(name="p", min_workers=1, max_workers=1))
        task = await first.submit("p", "gate", {"gate": str(gate), "items": [3]})
        while first.get_task(task.task_id).state is not TaskState.RUNNING:
            await first.wait(task.task_id, 0.05)
    # the owner went away while it ran; gate is idempotent, so the next owner runs it again
    gate.touch()
    async with PoolManager(settings) as second:
        done = await second.wait(task.task_id, 30)
        assert done.state is TaskState.COMPLETED and done.result["doubled"] == [6]
        events = [(r["kind"], r["data"]) for r in second.store.events(50)]
        assert any(k == "task_reconciled" and "requeued" in (d or "") for k, d in events)
