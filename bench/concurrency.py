"""Many MCP sessions at once against one server: executes of a trivial task vs bare pings.

    python bench/concurrency.py [--sessions 32 64] [--calls 200] [--procs 4] [--sdk-validation]

Each level runs N concurrent MCP sessions over HTTP on 127.0.0.1, spread over `procs` client
processes (one Python process cannot drive 64 sessions fast enough: it, not the server, was
the limit), each session making `calls` sequential calls: first all pings (`pools_ping`, the
floor: the MCP stack alone), then the same load of executes (`pools_execute` of `echo`,
waiting for the result, every task stored and committed before its reply). All sessions
open and warm up first, then start together. Reports calls/s (all calls over the time from
the common start to the last reply), p50/p99 latency, the ratio of execute to ping
throughput at each level, and the server's CPU time per call. Targets (issue 16): executes
>= 0.7x pings at both levels, and 64 sessions not slower in total than 32.

The clients skip the SDK's re-check of each result against the tool's output schema, as the
`mahavishnu` CLI does (a jsonschema pass on the client, larger for an execute's answer than
a ping's); `--sdk-validation` keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from typing import Any

from _common import ROOT, scratch_dir, skip_output_check

sys.path.insert(0, str(ROOT))
from tests.helpers.server import running_server, write_settings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sessions(url: str, sessions: int, calls: int, tool: str, validate: bool, ready: Any,
                    go: Any) -> tuple[float, list[float]]:
    """Open `sessions` sessions, warm each, report ready, wait for the common start, run the calls;
    returns (time of the last reply, latencies in ms)."""
    from mcp import Client

    args = {"task_type": "echo", "payload": {"i": 1}} if tool == "pools_execute" else {}
    latencies: list[float] = []
    opened = asyncio.Event()
    started = asyncio.Event()
    count = 0

    async def one() -> None:
        nonlocal count
        async with Client(url) as client:
            if not validate:
                skip_output_check(client)
            assert not (await client.call_tool(tool, args)).is_error  # warm this session
            count += 1
            if count == sessions:
                opened.set()
            await started.wait()
            for _ in range(calls):
                t = time.perf_counter()
                result = await client.call_tool(tool, args)
                latencies.append((time.perf_counter() - t) * 1000)
                assert not result.is_error, result.content

    tasks = [asyncio.ensure_future(one()) for _ in range(sessions)]
    await opened.wait()
    ready.put(True)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    started.set()
    await asyncio.gather(*tasks)
    return time.monotonic(), latencies


def _client_process(url: str, sessions: int, calls: int, tool: str, validate: bool, ready: Any, go: Any,
                    results: Any) -> None:
    results.put(asyncio.run(_sessions(url, sessions, calls, tool, validate, ready, go)))


def _server_cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _get(channel: Any, workers: list[Any]) -> Any:
    """The next message from the client processes; fails at once if one of them died."""
    import queue

    while True:
        try:
            return channel.get(timeout=1)
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"client process exited with {dead[0].exitcode}") from None


def load(url: str, pid: int, sessions: int, calls: int, procs: int, tool: str,
         validate: bool) -> tuple[float, list[float], float]:
    """(calls per second, latencies in ms, server CPU ms per call) of `sessions` sessions over
    `procs` client processes making `calls` calls each."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [sessions // procs + (1 if i < sessions % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_client_process, args=(url, n, calls, tool, validate, ready, go, results))
               for n in shares if n]
    for w in workers:
        w.start()
    for _ in workers:
        _get(ready, workers)
    cpu = _server_cpu(pid)
    start = time.monotonic()
    go.set()
    outcomes = [_get(results, workers) for _ in workers]
    cpu = _server_cpu(pid) - cpu
    for w in workers:
        w.join(60)
    end = max(o[0] for o in outcomes)
    latencies = [x for o in outcomes for x in o[1]]
    return len(latencies) / (end - start), latencies, cpu * 1000 / len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--procs", type=int, default=4, help="client processes the sessions are spread over")
    parser.add_argument("--sdk-validation", action="store_true",
                        help="let the SDK client re-check every result against the tool's output schema")
    args = parser.parse_args()
    home = scratch_dir()
    write_settings(home, enabled=("echo",), extra="")
    totals: dict[int, float] = {}
    ratios: dict[int, float] = {}
    with running_server(home) as (url, server):
        print(f"one server, clients in {args.procs} processes, SDK output-schema check "
              f"{'on' if args.sdk_validation else 'off'}")
        for sessions in args.sessions:
            rates = {}
            print(f"{sessions} sessions x {args.calls} calls")
            for tool, name in (("pools_ping", "bare ping"), ("pools_execute", "execute (echo)")):
                rate, ms, cpu = load(url, server.pid, sessions, args.calls, args.procs, tool, args.sdk_validation)
                rates[tool] = rate
                print(f"  {name:<16} {rate:8,.0f} calls/s  p50 {pct(ms, .5):7.1f} ms  p99 {pct(ms, .99):7.1f} ms  "
                      f"server cpu {cpu:.2f} ms/call")
            totals[sessions] = rates["pools_execute"]
            ratios[sessions] = rates["pools_execute"] / rates["pools_ping"]
            print(f"  ratio execute/ping: {ratios[sessions]:.2f}x (target >= 0.7x: "
                  f"{'met' if ratios[sessions] >= 0.7 else 'NOT met'})")
    if len(totals) >= 2:
        low, high = min(totals), max(totals)
        scale = totals[high] / totals[low]
        print(f"executes at {high} vs {low} sessions: {scale:.2f}x (target >= 1.0x: "
              f"{'met' if scale >= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
