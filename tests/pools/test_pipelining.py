"""A local worker is handed its next jobs before the current one ends: cancel, crash and order
stay exact for jobs it holds but has not started."""

from __future__ import annotations

from pathlib import Path

from pools.backends.local import HOLD_BYTES
from pools.manager import PoolManager
from pools.models import PoolConfig, TaskOptions, TaskState
from tests.helpers.waiting import started_markers, wait_until

HELPERS = "tests.helpers.tasks"


def held(manager: PoolManager, pool: str) -> list[str]:
    """Task ids handed to the pool's workers and not started (the backend's own view)."""
    backend = manager.resolve(pool).backend
    return [j.task_id for w in backend._workers.values() for j in w.jobs  # type: ignore[union-attr]
            if j is not w.running]


async def test_cancel_of_a_job_already_handed_to_the_worker(manager: PoolManager, gate: Path,
                                                            tmp_path: Path) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    ran = tmp_path / "ran"
    first = await manager.submit("p", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
    second = await manager.submit("p", "python", {"target": f"{HELPERS}:append_line", "args": [str(ran), "x"]})
    await wait_until(lambda: bool(started_markers(gate)), what="the first job to run")
    assert held(manager, "p") == [second.task_id]  # the worker holds it already
    cancelled = await manager.cancel(second.task_id)
    assert cancelled.state is TaskState.CANCELLED and cancelled.error == "cancelled before it started"
    await wait_until(lambda: held(manager, "p") == [], what="the worker to drop it")
    gate.touch()
    done = await manager.wait(first.task_id, 30)
    after = await manager.execute("p", "python", {"target": f"{HELPERS}:append_line", "args": [str(ran), "y"]})
    assert done.state is after.state is TaskState.COMPLETED
    assert ran.read_text() == "y\n"  # the cancelled job never ran
    assert done.result["value"]["pid"] == after.result["value"]  # on the same worker: nobody was killed


async def test_a_crash_fails_only_the_job_it_ran_and_requeues_the_ones_it_held(manager: PoolManager,
                                                                               gate: Path) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    crash = await manager.submit("p", "python", {"target": f"{HELPERS}:exit_after_gate", "args": [str(gate), 3]})
    behind = [await manager.submit("p", "echo", {"i": i}) for i in range(2)]
    await wait_until(lambda: bool(started_markers(gate)), what="the crashing job to run")
    assert held(manager, "p") == [t.task_id for t in behind]
    gate.touch()
    failed = await manager.wait(crash.task_id, 30)
    assert failed.state is TaskState.FAILED and "exit code 3" in (failed.error or "")
    for task in behind:
        done = await manager.wait(task.task_id, 30)
        assert done.state is TaskState.COMPLETED and done.attempts == 1  # never started on the dead worker


async def test_results_keep_submission_order_on_one_worker(manager: PoolManager, tmp_path: Path) -> None:
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    out = tmp_path / "order"
    tasks = [await manager.submit("p", "python", {"target": f"{HELPERS}:append_line", "args": [str(out), str(i)]})
             for i in range(40)]
    for task in tasks:
        assert (await manager.wait(task.task_id, 30)).state is TaskState.COMPLETED
    assert out.read_text().split() == [str(i) for i in range(40)]


async def test_an_idle_worker_takes_a_job_held_behind_a_long_one(manager: PoolManager, gate: Path) -> None:
    await manager.register(PoolConfig(name="p", min_workers=2, max_workers=2))
    long = [await manager.submit("p", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
            for _ in range(1)]
    short = [await manager.submit("p", "echo", {"i": i}) for i in range(3)]
    # every short job completes while the long one still blocks its worker
    for task in short:
        assert (await manager.wait(task.task_id, 30)).state is TaskState.COMPLETED
    assert manager.get_task(long[0].task_id).state is TaskState.RUNNING
    gate.touch()
    assert (await manager.wait(long[0].task_id, 30)).state is TaskState.COMPLETED


async def test_a_worker_is_handed_large_payloads_within_its_byte_budget(manager: PoolManager, gate: Path) -> None:
    """Jobs are handed over ahead of time only up to HOLD_BYTES of messages: large payloads wait in
    the pool's queue (still cancellable there, counted as queued) and run in order all the same."""
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    first = await manager.submit("p", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]})
    big = [await manager.submit("p", "echo", {"n": i, "text": "x" * (HOLD_BYTES * 2 // 5)}) for i in range(6)]
    await wait_until(lambda: bool(started_markers(gate)), what="the first job to run")
    assert held(manager, "p") == [t.task_id for t in big[:2]]  # two fit in the budget, the rest wait
    assert manager.get_pool("p").metrics.queue_size == 6
    gate.touch()
    assert (await manager.wait(first.task_id, 30)).state is TaskState.COMPLETED
    for i, task in enumerate(big):
        done = await manager.wait(task.task_id, 30)
        assert done.state is TaskState.COMPLETED and done.result["echo"]["n"] == i


async def test_each_held_job_keeps_its_own_timeout(manager: PoolManager, gate: Path) -> None:
    """A worker has one timer, moved from job to job: a short timeout held behind a job with a long
    one still fires, and the job behind it is unharmed."""
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    quick = await manager.submit("p", "echo", {"i": 1}, TaskOptions(timeout=3600))
    stuck = await manager.submit("p", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]},
                                 TaskOptions(timeout=0.5))
    after = await manager.submit("p", "echo", {"i": 2}, TaskOptions(timeout=60))
    assert (await manager.wait(quick.task_id, 30)).state is TaskState.COMPLETED
    timed_out = await manager.wait(stuck.task_id, 30)
    assert timed_out.state is TaskState.TIMED_OUT and "timed out after 0.5s" in (timed_out.error or "")
    assert (await manager.wait(after.task_id, 30)).state is TaskState.COMPLETED  # on the replacement worker


async def test_a_lone_task_goes_to_an_idle_worker_before_submit_returns(manager: PoolManager, gate: Path) -> None:
    """Nothing queued and a worker holding nothing: the hand-over is part of submit (the task runs
    while its caller sets up the wait); with a job waiting already, a new one queues behind it."""
    await manager.register(PoolConfig(name="p", min_workers=1, max_workers=1))
    await wait_until(lambda: manager.get_pool("p").workers == 1, what="the worker to start")
    # durable=False: no await inside submit, so no loop iteration could have handed it over instead
    first = await manager.submit("p", "python", {"target": f"{HELPERS}:wait_for_file", "args": [str(gate)]},
                                 durable=False)
    assert first.state is TaskState.RUNNING and first.worker_id is not None and first.attempts == 1
    second = await manager.submit("p", "echo", {"i": 2}, durable=False)
    assert second.state is TaskState.QUEUED  # the worker holds a job: this one goes through the queue
    await wait_until(lambda: held(manager, "p") == [second.task_id], what="the worker to hold the second job")
    gate.touch()
    assert (await manager.wait(first.task_id, 30)).state is TaskState.COMPLETED
    assert (await manager.wait(second.task_id, 30)).state is TaskState.COMPLETED
