"""map_reduce of 20,000 trivial items over two local pools in ONE MCP call over HTTP to a real
server subprocess, vs ProcessPoolExecutor(2).map of the same items (default chunksize, and
also a chunked map, the fairer baseline since we batch items into shards). Every shard is a
stored task (payload and result), committed before the call returns.

A second baseline is the floor the MCP SDK itself sets: bench/bare_mcp_server.py, a server of
the same SDK and transport whose one tool takes the same arguments and hands the items back in
the same shape, with no workers, store or checks of ours, called by the same client the same
way. ours/bare says how much of the call is ours; bare/chunked says how far 1.0x is below what
one such MCP call costs at all.

    python bench/distribute.py [--items 20000] [--runs 3] [--sdk-validation]

The client skips the SDK's re-check of the result against the tool's output schema, as the
`mahavishnu` CLI does; `--sdk-validation` keeps it (a client-side jsonschema pass).
Target (issue 16): at least 1.0x the chunked map.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import report, scratch_dir, skip_output_check

from tests.helpers.server import running_server


def trivial(x: int) -> int:
    return x


def baseline(n: int, chunksize: int = 1) -> float:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(trivial, range(50)))
        start = time.perf_counter()
        out = list(pool.map(trivial, range(n), chunksize=chunksize))
        rate = n / (time.perf_counter() - start)
    assert out[-1] == n - 1
    return rate


@contextmanager
def bare_server() -> Iterator[str]:
    """bench/bare_mcp_server.py as its own subprocess; yields its URL."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_mcp_server.py"))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = next((m.group(1) for line in proc.stdout if (m := re.search(r"serving at (\S+)", line))), None)
        assert url is not None, f"the bare MCP server did not start (exit {proc.wait(10)})"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def ours(n: int, url: str, validate: bool) -> float:
    """One pools_distribute call of n items (after a small warm-up call); items per second."""
    from mcp import Client

    async with Client(url) as client:
        if not validate:
            skip_output_check(client)
        args = {"task_type": "echo", "strategy": "map_reduce", "payload": {"items": list(range(n))}}
        await client.call_tool("pools_distribute", {**args, "payload": {"items": [1, 2]}})
        start = time.perf_counter()
        result = await client.call_tool("pools_distribute", args)
        rate = n / (time.perf_counter() - start)
    assert not result.is_error, result.content
    data = result.structured_content
    assert data["failed"] == 0 and data["result"]["count"] == n and len(data["pools"]) == 2
    assert data["result"]["echo"]["items"][-1] == n - 1
    return rate


def server(home: Path) -> Any:
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.yaml").write_text("default_pool: false\n")
    return running_server(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sdk-validation", action="store_true",
                        help="let the SDK client re-check the result against the tool's output schema")
    args = parser.parse_args()
    base, chunked, mine, floor = [], [], [], []
    with server(scratch_dir() / "home") as (url, _), bare_server() as bare_url:
        async def register() -> None:
            from mcp import Client

            async with Client(url) as client:
                for name in ("left", "right"):
                    r = await client.call_tool("pools_register", {"name": name, "min_workers": 1, "max_workers": 1})
                    assert not r.is_error, r.content

        asyncio.run(register())
        for _ in range(args.runs):
            base.append(baseline(args.items))
            chunked.append(baseline(args.items, chunksize=max(1, args.items // 8)))
            mine.append(asyncio.run(ours(args.items, url, args.sdk_validation)))
            floor.append(asyncio.run(ours(args.items, bare_url, args.sdk_validation)))
    check = "on" if args.sdk_validation else "off"
    report(f"map_reduce of {args.items} trivial items, 2 workers (median of {args.runs} runs; SDK output-schema "
           f"re-check {check})", "pools_distribute map_reduce (1 MCP call)", mine, "ProcessPoolExecutor(2).map", base,
           unit="items/s")
    ratio = report("  same, against a chunked map (chunksize items/8)", "pools_distribute map_reduce", mine,
                   "ProcessPoolExecutor(2).map chunked", chunked, unit="items/s")
    print(f"  target >= 1.0x the chunked map: {'met' if ratio >= 1.0 else 'NOT met'}")
    report("  same, against the bare MCP floor (bench/bare_mcp_server.py: same SDK and transport, echoes the items)",
           "pools_distribute map_reduce", mine, "bare MCP tool", floor, unit="items/s")
    report("  the floor itself, against the chunked map", "bare MCP tool", floor,
           "ProcessPoolExecutor(2).map chunked", chunked, unit="items/s")


if __name__ == "__main__":
    main()
