"""The `mahavishnu` pool type with real worker processes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pools.errors import Conflict, InvalidInput, PoolNotFound, TaskTypeDisabled, UnknownTaskType
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolStatus, TaskOptions, TaskState
from tests.conftest import make_settings
from tests.helpers.waiting import gone, started_markers, wait_until

HELPERS = "tests.helpers.tasks"


def worker_pids(manager: PoolManager, pool: str) -> set[int]:
    return {w.pid for w in manager.get_pool(pool).worker_details if w.pid}


async def test_register_execute_and_read_back(manager: PoolManager, tmp_path: Path) -> None:
    info = await manager.register(PoolConfig(name="local", min_workers=1, max_workers=2))
    assert info.status is PoolStatus.RUNNING and info.workers == 1
    src = tmp_path / "bad.py"
    src.write_text("import os\n\ndef f():\n    return undefined_name\n")
    done = await manager.execute("local", "analyze", {"file": str(src)})
    assert done.state is TaskState.COMPLETED, done.error
    assert done.result["count"] == 2
    codes = sorted(i["code"] for i in done.result["issues"])
    assert codes == ["UndefinedName", "UnusedImport"]
    assert done.summary == "Analysis complete: 2 issues found in 1 file(s)"
    again = manager.get_task(done.task_id)
    assert again.result == done.result and again.worker_id and again.duration_s is not None
    # by id works as well as by name
    assert manager.get_pool(info.pool_id).name == "local"


async def test_results_and_pools_survive_a_restart(home: Path) -> None:
    async with PoolManager(make_settings(home)) as m:
        await m.register(PoolConfig(name="keep", min_workers=1, max_workers=1))
        done = await m.execute("keep", "echo", {"items": [1, 2, 3]})
    async with PoolManager(make_settings(home)) as m:
        assert [p.name for p in m.list_pools()] == ["keep"]
        back = m.get_task(done.task_id)
        assert back.state is TaskState.COMPLETED and back.result["count"] == 3
        assert m.get_pool("keep").metrics.tasks_completed == 1


async def test_ten_tasks_on_two_workers_run_two_at_a_time(manager: PoolManager, gate: Path) -> None:
    await manager.register(PoolConfig(name="two", min_workers=2, max_workers=2))
    tasks = [await manager.submit("two", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
             for _ in range(10)]
    await wait_until(lambda: len(started_markers(gate)) == 2, what="two tasks to start")
    running = [t for t in tasks if manager.get_task(t.task_id).state is TaskState.RUNNING]
    assert len(running) == 2
    gate.touch()
    results = [await manager.wait(t.task_id, 30) for t in tasks]
    assert all(r.state is TaskState.COMPLETED for r in results), [r.error for r in results]
    spans = sorted((r.result["value"]["start"], r.result["value"]["end"]) for r in results)
    # at no moment do more than two run at once
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    assert len({r.worker_id for r in results}) == 2


async def test_scales_up_under_a_burst_and_down_when_idle(home: Path, gate: Path) -> None:
    async with PoolManager(make_settings(home, idle_timeout_s=0.3)) as m:
        await m.register(PoolConfig(name="elastic", min_workers=1, max_workers=4))
        tasks = [await m.submit("elastic", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
                 for _ in range(8)]
        await wait_until(lambda: len(started_markers(gate)) == 4, what="four workers busy")
        assert m.get_pool("elastic").workers == 4  # never beyond max
        gate.touch()
        for t in tasks:
            assert (await m.wait(t.task_id, 30)).state is TaskState.COMPLETED
        await wait_until(lambda: m.get_pool("elastic").workers == 1, what="scale down to min_workers")
        kinds = [(r["kind"], r["data"]) for r in m.store.events(200)]
        assert any(k == "pool_scaled" and '"up"' in d for k, d in kinds)
        assert any(k == "pool_scaled" and '"idle"' in d for k, d in kinds)


async def test_timeout_kills_the_worker_and_replaces_it(manager: PoolManager, gate: Path) -> None:
    await manager.register(PoolConfig(name="t", min_workers=1, max_workers=1))
    before = worker_pids(manager, "t")
    done = await manager.execute("t", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]},
                                 TaskOptions(timeout=0.5))
    assert done.state is TaskState.TIMED_OUT
    assert "timed out after 0.5s" in (done.error or "")
    (old,) = before
    await wait_until(lambda: gone(old), what="the timed-out worker to die")
    await wait_until(lambda: len(worker_pids(manager, "t")) == 1 and worker_pids(manager, "t") != before,
                     what="a replacement worker")
    ok = await manager.execute("t", "echo", {"x": 1})
    assert ok.state is TaskState.COMPLETED


async def test_cancel_queued_and_running(manager: PoolManager, gate: Path, tmp_path: Path) -> None:
    await manager.register(PoolConfig(name="c", min_workers=1, max_workers=1))
    pidfile = tmp_path / "grandchild.pid"
    running = await manager.submit("c", "python", {"target": f"{HELPERS}:spawn_sleeper", "args": [str(pidfile)]})
    queued = await manager.submit("c", "echo", {"x": 1})
    await wait_until(pidfile.exists, what="the running task to start its child")
    cancelled_queued = await manager.cancel(queued.task_id)
    assert cancelled_queued.state is TaskState.CANCELLED and cancelled_queued.started_at is None
    cancelled = await manager.cancel(running.task_id)
    assert cancelled.state is TaskState.CANCELLED
    grandchild = int(pidfile.read_text())
    await wait_until(lambda: gone(grandchild), what="the task's own child process to be killed too")
    ok = await manager.execute("c", "echo", {"x": 2})
    assert ok.state is TaskState.COMPLETED
    with pytest.raises(Conflict, match="already ended") as refused:
        await manager.cancel(ok.task_id)
    assert refused.value.code == "conflict" and refused.value.field == "task_id"


@pytest.mark.parametrize(("target", "args", "expected"), [
    ("exit_now", [7], "exit code 7"),
    ("segfault", [], "SIGSEGV"),
])
async def test_worker_crash_mid_task_fails_it_and_replaces_the_worker(
        manager: PoolManager, target: str, args: list[int], expected: str) -> None:
    await manager.register(PoolConfig(name="crashy", min_workers=1, max_workers=1))
    done = await manager.execute("crashy", "python", {"target": f"{HELPERS}:{target}", "args": args})
    assert done.state is TaskState.FAILED
    assert "died while running the task" in (done.error or "") and expected in (done.error or "")
    ok = await manager.execute("crashy", "echo", {"x": 1})
    assert ok.state is TaskState.COMPLETED


async def test_retries_run_a_crashed_task_again(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="r", min_workers=1, max_workers=1))
    done = await manager.execute("r", "python", {"target": f"{HELPERS}:exit_now", "args": [3]},
                                 TaskOptions(retries=1))
    assert done.state is TaskState.FAILED and done.attempts == 2


async def test_a_pool_whose_workers_keep_dying_turns_degraded(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="bad", min_workers=1, max_workers=1))
    for _ in range(3):
        done = await manager.execute("bad", "python", {"target": f"{HELPERS}:exit_now", "args": [1]})
        assert done.state is TaskState.FAILED
    info = manager.get_pool("bad")
    assert info.status is PoolStatus.DEGRADED
    assert "died" in (info.status_reason or "")
    assert manager.health("bad").status == "unhealthy"


async def test_disabled_and_unknown_task_types_are_refused(home: Path) -> None:
    async with PoolManager(make_settings(home, enabled_task_types=["analyze", "echo"])) as m:
        await m.register(PoolConfig(name="p", min_workers=1, max_workers=1))
        with pytest.raises(TaskTypeDisabled, match="MAHAVISHNU_ENABLE_TASK_TYPES=shell"):
            await m.submit("p", "shell", {"argv": ["true"]})
        with pytest.raises(UnknownTaskType) as info:
            await m.submit("p", "compute", {"query": "SELECT 1"})
        assert "available: analyze, echo, prompt, python, shell" in str(info.value)
        assert "mahavishnu.task_types" in str(info.value)


async def test_bad_payloads_are_rejected_naming_the_field(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="v", min_workers=1, max_workers=1))
    with pytest.raises(InvalidInput) as info:
        await manager.submit("v", "shell", {"argv": "rm -rf /"})
    assert info.value.field == "payload.argv"
    with pytest.raises(InvalidInput, match="give at least one of file, files or sources"):
        await manager.submit("v", "analyze", {})
    with pytest.raises(InvalidInput) as info:
        await manager.submit("v", "analyze", {"file": "x.py", "nope": 1})
    assert info.value.field == "payload.nope"
    with pytest.raises(PoolNotFound, match="mahavishnu pools list"):
        await manager.submit("missing", "echo", {})
    assert manager.stats().queued_tasks == 0  # nothing half-created


async def test_shell_runs_argv_and_reports_exit_code(manager: PoolManager, tmp_path: Path) -> None:
    await manager.register(PoolConfig(name="sh", min_workers=1, max_workers=1))
    done = await manager.execute("sh", "shell", {"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                                 "cwd": str(tmp_path)})
    assert done.state is TaskState.COMPLETED
    assert done.result == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "truncated": False}
    assert done.summary == "Exit code 3: out"


async def test_prompt_reports_a_missing_cli_clearly(home: Path) -> None:
    async with PoolManager(make_settings(home, enabled_task_types=["prompt"])) as m:
        await m.register(PoolConfig(name="ai", min_workers=1, max_workers=1, worker_type="terminal-qwen"))
        if shutil.which("qwen"):  # pragma: no cover - only where qwen is really installed
            pytest.skip("qwen is installed here")
        done = await m.execute("ai", "prompt", {"prompt": "hello"})
        assert done.state is TaskState.FAILED
        assert "'qwen', which is not installed" in (done.error or "")


async def test_failing_task_keeps_the_remote_traceback(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="tb", min_workers=1, max_workers=1))
    done = await manager.execute("tb", "python", {"target": "json:loads", "args": ["{not json"]})
    assert done.state is TaskState.FAILED
    assert (done.error or "").startswith("JSONDecodeError")
    assert "Traceback" in (done.error or "")


async def test_a_wait_that_runs_out_or_is_given_up_leaves_the_task_and_other_waiters_alone(
        manager: PoolManager, gate: Path) -> None:
    import asyncio

    await manager.register(PoolConfig(name="w", min_workers=1, max_workers=1))
    task = await manager.submit("w", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
    await wait_until(lambda: manager.get_task(task.task_id).state is TaskState.RUNNING, what="the task to start")
    assert (await manager.wait(task.task_id, 0.01)).state is TaskState.RUNNING  # ran out: as it stands
    assert (await manager.wait(task.task_id, 0)).state is TaskState.RUNNING
    patient = asyncio.ensure_future(manager.wait(task.task_id, 60))
    quitter = asyncio.ensure_future(manager.wait(task.task_id, 60))
    await wait_until(lambda: len(manager._waiters.get(task.task_id, [])) == 2, what="both waiters")
    quitter.cancel()
    await wait_until(lambda: len(manager._waiters.get(task.task_id, [])) == 1, what="the quitter to leave")
    assert manager.get_task(task.task_id).state is TaskState.RUNNING
    gate.touch()
    done = await asyncio.wait_for(patient, 60)
    assert done.state is TaskState.COMPLETED and quitter.cancelled()
    assert task.task_id not in manager._waiters
    assert (await manager.wait(task.task_id, 5)).state is TaskState.COMPLETED  # a late wait: at once


async def test_an_outcome_is_committed_when_its_waiter_gets_it(home: Path, manager: PoolManager) -> None:
    import sqlite3

    await manager.register(PoolConfig(name="c", min_workers=1, max_workers=1))
    for i in range(20):  # as a waiting execute: the submit is not committed, the outcome's commit covers it
        queued = await manager.submit("c", "echo", {"i": i}, durable=False)
        done = await manager.wait(queued.task_id, 30)
        db = sqlite3.connect(home / "mahavishnu.db")  # another connection sees only what is committed
        try:
            row = db.execute("SELECT state, result FROM tasks WHERE task_id = ?", (done.task_id,)).fetchone()
        finally:
            db.close()
        assert row is not None and row[0] == "completed" and '"i":' + str(i) in row[1].replace(" ", "")


async def test_a_wait_that_leaves_the_commit_to_its_caller(home: Path, manager: PoolManager, gate: Path) -> None:
    """wait(durable=False), as a distribution waits for its shards: the outcome comes back at once,
    store.durable() commits it, and a quiet waiter that runs out or gives up leaves nothing behind."""
    import asyncio
    import sqlite3

    await manager.register(PoolConfig(name="q", min_workers=1, max_workers=1))
    slow = await manager.submit("q", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
    assert (await manager.wait(slow.task_id, 0.01, durable=False)).state in (TaskState.QUEUED, TaskState.RUNNING)
    quitter = asyncio.ensure_future(manager.wait(slow.task_id, 60, durable=False))
    waiter = asyncio.ensure_future(manager.wait(slow.task_id, 60, durable=False))
    await wait_until(lambda: len(manager._quiet_waiters.get(slow.task_id, [])) == 2, what="both quiet waiters")
    quitter.cancel()
    await wait_until(lambda: len(manager._quiet_waiters.get(slow.task_id, [])) == 1, what="the quitter to leave")
    gate.touch()
    assert (await asyncio.wait_for(waiter, 60)).state is TaskState.COMPLETED
    assert slow.task_id not in manager._quiet_waiters and slow.task_id not in manager._waiters
    for i in range(10):
        queued = await manager.submit("q", "echo", {"i": i}, durable=False)
        done = await manager.wait(queued.task_id, 30, durable=False)
        assert done.state is TaskState.COMPLETED and done.result == {"echo": {"i": i}, "count": 1}
        await manager.store.durable()
        db = sqlite3.connect(home / "mahavishnu.db")  # another connection sees only what is committed
        try:
            row = db.execute("SELECT state, result FROM tasks WHERE task_id = ?", (done.task_id,)).fetchone()
        finally:
            db.close()
        assert row is not None and row[0] == "completed" and '"i":' + str(i) in row[1]


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
async def test_workers_run_as_batch_work(manager: PoolManager) -> None:
    """A worker woken by a job must not preempt the server that sent it (worker_process.batch_policy)."""
    await manager.register(PoolConfig(name="b", min_workers=1, max_workers=1))
    done = await manager.execute("b", "python", {"target": "os:sched_getscheduler", "args": [0]})
    assert done.state is TaskState.COMPLETED and done.result == {"value": os.SCHED_BATCH}
