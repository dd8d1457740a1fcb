"""map_reduce of 20,000 trivial items over two local pools in ONE MCP call over HTTP to a real
server subprocess, vs ProcessPoolExecutor(2).map of the same items (default chunksize, and
also a chunked map, the fairer baseline since we batch items into shards). Every shard is a
stored task (payload and result), committed before the call returns.

    python bench/distribute.py [--items 20000] [--runs 3] [--sdk-validation]

The client skips the SDK's re-check of the result against the tool's output schema, as the
`mahavishnu` CLI does; `--sdk-validation` keeps it (a client-side jsonschema pass).
Target (issue 16): at least 1.0x the chunked map.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import report, scratch_dir

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


async def ours(n: int, url: str, validate: bool) -> float:
    from mcp import Client

    async def trust(name: str, result: object) -> None:
        return None

    async with Client(url) as client:
        if not validate:
            client.session.validate_tool_result = trust  # type: ignore[method-assign]
        args = {"task_type": "echo", "strategy": "map_reduce", "payload": {"items": list(range(n))}}
        await client.call_tool("pools_distribute", {**args, "payload": {"items": [1, 2]}})
        start = time.perf_counter()
        result = await client.call_tool("pools_distribute", args)
        rate = n / (time.perf_counter() - start)
    assert not result.is_error, result.content
    data = result.structured_content
    assert data["failed"] == 0 and data["result"]["count"] == n and len(data["pools"]) == 2
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
    base, chunked, mine = [], [], []
    with server(scratch_dir() / "home") as (url, _):
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
    check = "on" if args.sdk_validation else "off"
    report(f"map_reduce of {args.items} trivial items, 2 workers (median of {args.runs} runs; SDK output-schema "
           f"re-check {check})", "pools_distribute map_reduce (1 MCP call)", mine, "ProcessPoolExecutor(2).map", base,
           unit="items/s")
    ratio = report("  same, against a chunked map (chunksize items/8)", "pools_distribute map_reduce", mine,
                   "ProcessPoolExecutor(2).map chunked", chunked, unit="items/s")
    print(f"  target >= 1.0x the chunked map: {'met' if ratio >= 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
