"""The floor for bench/distribute.py: an MCP server with nothing of ours in it.

    python bench/bare_mcp_server.py      # prints "bare MCP serving at <url>", serves until killed

Same SDK (mcp), same streamable HTTP transport under uvicorn on 127.0.0.1, and one tool,
`pools_distribute`, that takes the same arguments as ours (task_type, strategy, payload with
20,000 items) and answers the same shape: a structured result carrying the items back under
result.echo.items, with one small entry per shard and a short text block (ours sends a short
text too once an answer is over 64 KB). It runs no worker, stores nothing and validates
nothing beyond what the SDK does for any tool, so its time is what the SDK alone costs for one
such call: decoding the request, dumping and encoding the reply, on both ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn
from _common import ROOT  # noqa: F401 - ROOT puts the project on sys.path
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent

from mcp_server.http import listen

SHARDS = 8

server = MCPServer("bare", log_level="WARNING")


@server.tool(name="pools_distribute")
async def pools_distribute(task_type: str, payload: dict[str, Any], strategy: str = "round_robin",
                           timeout: float = 300.0) -> CallToolResult:
    started = time.monotonic()
    items = payload.get("items") or []
    shards = [{"index": i, "pool_id": "p", "pool_name": "left" if i % 2 else "right", "task_id": f"t{i}",
               "state": "completed", "attempts": 1, "retried_from": []} for i in range(SHARDS)]
    data = {"strategy": strategy, "task_type": task_type, "pools": ["left", "right"], "total": SHARDS,
            "successful": SHARDS, "failed": 0, "retried": 0, "duration_s": round(time.monotonic() - started, 4),
            "shards": shards, "result": {"echo": {"items": items}, "count": len(items)},
            "summary": f"Echoed {len(items)} item(s)"}
    return CallToolResult(content=[TextContent(type="text", text="pools_distribute: the answer is in "
                                                                  "structuredContent")],
                          structured_content=data)


async def main() -> None:
    # The listening socket as our server makes it: its connections get TCP_NODELAY, without which a
    # small answer waits ~40 ms for a delayed ACK (a floor with that stall would be no floor).
    sock = listen("127.0.0.1", 0)
    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        if serving.done():
            await serving
        await asyncio.sleep(0.02)
    print(f"bare MCP serving at http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
