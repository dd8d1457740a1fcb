"""Many MCP sessions at once against one server: executes of a trivial task vs bare pings.

    python bench/concurrency.py [--sessions 32 64] [--calls 200]

Each level runs N concurrent MCP sessions over HTTP on 127.0.0.1, each making `calls`
sequential calls: first all pings (`pools_ping`, the floor: the MCP stack alone), then the
same load of executes (`pools_execute` of `echo`, waiting for the result, every task stored
and committed before its reply). Reports calls/s and p50/p99 latency, and the ratio of
execute to ping throughput at each level. Targets (issue 16): executes >= 0.7x pings at both
levels, and 64 sessions not slower in total than 32.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))
from tests.helpers.server import running_server, write_settings  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, sessions: int, calls: int, tool: str) -> tuple[float, list[float]]:
    """(calls per second, latencies in ms) of `sessions` sessions making `calls` calls each."""
    from mcp import Client

    args = {"task_type": "echo", "payload": {"i": 1}} if tool == "pools_execute" else {}
    latencies: list[float] = []
    ready = asyncio.Event()
    opened = 0

    async def one() -> None:
        nonlocal opened
        async with Client(url) as client:
            await client.call_tool(tool, args)  # warm this session
            opened += 1
            if opened == sessions:
                ready.set()
            await ready.wait()
            for _ in range(calls):
                t = time.perf_counter()
                result = await client.call_tool(tool, args)
                latencies.append((time.perf_counter() - t) * 1000)
                assert not result.is_error, result.content

    tasks = [asyncio.ensure_future(one()) for _ in range(sessions)]
    await ready.wait()
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    return sessions * calls / (time.perf_counter() - start), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mahavishnu-bench-"))
    write_settings(home, enabled=("echo",), extra="")
    totals: dict[int, float] = {}
    with running_server(home) as (url, _):
        for sessions in args.sessions:
            ping_rate, ping_ms = asyncio.run(load(url, sessions, args.calls, "pools_ping"))
            exec_rate, exec_ms = asyncio.run(load(url, sessions, args.calls, "pools_execute"))
            totals[sessions] = exec_rate
            print(f"{sessions} sessions x {args.calls} calls")
            print(f"  bare ping          {ping_rate:8,.0f} calls/s  p50 {pct(ping_ms, .5):7.1f} ms  "
                  f"p99 {pct(ping_ms, .99):7.1f} ms")
            print(f"  execute (echo)     {exec_rate:8,.0f} calls/s  p50 {pct(exec_ms, .5):7.1f} ms  "
                  f"p99 {pct(exec_ms, .99):7.1f} ms")
            ratio = exec_rate / ping_rate
            print(f"  ratio execute/ping: {ratio:.2f}x (target >= 0.7x: {'met' if ratio >= 0.7 else 'NOT met'})")
    if len(totals) >= 2:
        low, high = min(totals), max(totals)
        scale = totals[high] / totals[low]
        print(f"executes at {high} vs {low} sessions: {scale:.2f}x (target >= 1.0x: "
              f"{'met' if scale >= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
