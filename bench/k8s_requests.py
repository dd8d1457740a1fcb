"""API traffic of a Kubernetes pool: requests per second while Jobs run, requests per task, and
the delay from a Job's end to its result in the store.

    python bench/k8s_requests.py [--jobs 200] [--window 5]

Runs one-task Jobs on the loopback API server (tests/helpers/kube_api.py, whose pods are local
processes). Each task waits for a gate file, so all of them run at once; while they run the
server counts requests over `--window` seconds. Then the gate opens: each task prints the time it
ended and the store records when its result arrived. Baseline in the same run: the same pool
with a tenth of the Jobs; the ratio of the two request rates says whether traffic grows with
the number of running Jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from _common import ROOT, scratch_dir  # noqa: F401 - ROOT puts the project on sys.path

from pools.manager import PoolManager
from pools.models import PoolConfig, PoolType, TaskOptions, TaskState
from pools.settings import Settings
from tests.helpers.kube_api import FakeKube


def pool_config(kube: FakeKube, jobs: int) -> PoolConfig:
    os.environ["BENCH_KUBE_TOKEN"] = "bench"
    return PoolConfig.model_validate({"name": "bench", "type": PoolType.KUBERNETES, "namespace": "bench",
                                      "max_workers": jobs, "endpoint": kube.url, "credential": "bench"})


async def measure(jobs: int, window: float) -> dict[str, float]:
    home = scratch_dir()
    gate = home / "gate"
    kube = FakeKube(token="bench")
    kube.start()
    settings = Settings.load(home, default_pool=False, enabled_task_types=["shell"], max_workers_per_pool=jobs,
                             credentials={
        "bench": {"env": "BENCH_KUBE_TOKEN", "endpoints": [kube.url]}})  # the operator binds the token to it
    arrived: dict[str, float] = {}
    try:
        async with PoolManager(settings) as m:
            finished = m.task_finished

            def record(task_id: str, *args: Any, **kwargs: Any) -> None:
                arrived[task_id] = time.time()
                finished(task_id, *args, **kwargs)

            m.task_finished = record  # type: ignore[method-assign]
            await m.register(pool_config(kube, jobs))
            script = f"while [ ! -e {gate} ]; do sleep 0.05; done; date +%s.%N"
            began, first = time.monotonic(), len(kube.requests)
            ids = []
            for _ in range(jobs):
                record_ = await m.submit("bench", "shell", {"argv": ["sh", "-c", script]},
                                         TaskOptions(timeout=600))
                ids.append(record_.task_id)
                for _ in range(3):  # one loop turn per submit: one Job per task, never a shared one
                    await asyncio.sleep(0)
            while sum(1 for p in list(kube.procs.values()) if p.poll() is None) < jobs:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # let dispatch settle before the window opens
            before = len(kube.requests)
            await asyncio.sleep(window)
            steady = (len(kube.requests) - before) / window
            gate.touch()
            records = [await m.wait(t, 600) for t in ids]
            total = len(kube.requests) - first
            elapsed = time.monotonic() - began
        assert all(r.state is TaskState.COMPLETED for r in records), [r.error for r in records if r.error][:3]
        delays = [arrived[r.task_id] - float(r.result["stdout"]) for r in records]
        return {"steady req/s": steady, "req/task": total / jobs, "jobs created": float(sum(
            1 for method, path in kube.requests if method == "POST" and path.endswith("/jobs"))),
            "median end->store s": statistics.median(delays), "max end->store s": max(delays),
            "wall s": elapsed}
    finally:
        gate.touch()  # an interrupted run must not leave its gated containers waiting forever
        kube.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args()
    small = asyncio.run(measure(max(1, args.jobs // 10), args.window))
    big = asyncio.run(measure(args.jobs, args.window))
    print(f"Kubernetes pool API traffic, one-task Jobs on the loopback API server (window {args.window:g}s)")
    for key in big:
        print(f"  {key:<22} {max(1, args.jobs // 10):>4} Jobs: {small[key]:>9.2f}   {args.jobs:>4} Jobs: "
              f"{big[key]:>9.2f}")
    print(f"  ratio of steady request rates ({args.jobs} vs {max(1, args.jobs // 10)} Jobs): "
          f"{big['steady req/s'] / max(small['steady req/s'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
