"""The SDK's MCP client against a real server subprocess over streamable HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_server.registry import TOOLS
from tests.helpers.fuzz import check_bad_inputs
from tests.helpers.ports import free_port
from tests.helpers.replies import data
from tests.helpers.server import running_server, write_settings
from tests.helpers.waiting import started_markers, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("home")
    write_settings(home)
    with running_server(home) as (url, _):
        yield url


@pytest.mark.parametrize("mode", ["legacy", "auto", "2026-07-28"])
async def test_every_tool_over_http_in_each_protocol_mode(server: str, mode: str, tmp_path: Path) -> None:
    name = f"http-{mode}".replace(".", "-")
    async with Client(server, mode=mode) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == {t.name for t in TOOLS}
        for spec in TOOLS:
            tool = listed[spec.name]
            assert tool.output_schema, spec.name
            assert tool.annotations and tool.annotations.read_only_hint is spec.read_only

        pool = data(await client.call_tool("pools_register", {"name": name, "min_workers": 1, "max_workers": 2}))
        assert pool["name"] == name and pool["status"] == "running"
        assert name in [p["name"] for p in data(await client.call_tool("pools_list", {}))["pools"]]
        assert data(await client.call_tool("pools_list", {"by_type": "kubernetes"}))["pools"] == []
        assert data(await client.call_tool("pools_get", {"pool": pool["pool_id"]}))["worker_details"]

        src = tmp_path / "x.py"
        src.write_text("import sys\n")
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append((p, total, message))

        out = data(await client.call_tool("pools_execute", {"pool": name, "task_type": "analyze",
                                                            "payload": {"file": str(src)}},
                                          progress_callback=on_progress))
        assert out["finished"] and out["task"]["state"] == "completed"
        assert out["task"]["result"]["issues"][0]["code"] == "UnusedImport"
        assert progress and progress[-1][0] == 1
        task = data(await client.call_tool("pools_task", {"task_id": out["task"]["task_id"]}))
        assert task["summary"] == "Analysis complete: 1 issues found in 1 file(s)"

        stats = data(await client.call_tool("pools_stats", {"by_type": True}))
        assert stats["by_type"]["mahavishnu"]["pools"] >= 1 and stats["tasks_completed"] >= 1
        health = data(await client.call_tool("pools_health", {"pool": name}))
        assert health["status"] == "healthy" and health["pools"][0]["workers"] == 1
        snap = data(await client.call_tool("pools_watch", {}))
        assert any(p["name"] == name for p in snap["pools"])
        scaled = data(await client.call_tool("pools_scale", {"pool": name, "target": 2}))
        assert scaled["workers"] == 2
        assert data(await client.call_tool("pools_ping", {}))["ok"] is True
        hits = data(await client.call_tool("pools_memory_search", {"query": "analyze"}))
        assert any(h["source"] == "local" and h["task_type"] == "analyze" for h in hits["results"])
        closed = f"http://127.0.0.1:{free_port()}/mcp"  # free a moment ago: nothing listens there
        nobody = data(await client.call_tool("pools_memory_sync", {"endpoint": closed}))
        assert nobody["pushed"] == 0 and nobody["batches"] == 0 and nobody["endpoint"] == closed
        assert "unreachable" in nobody["error"] or "did not list" in nobody["error"], nobody["error"]
        probe = data(await client.call_tool("pools_discover", {}))
        assert probe["found"][0]["endpoint"] == "http://127.0.0.1:8678/mcp"
        types = {t["name"]: t for t in data(await client.call_tool("pools_task_types", {}))["task_types"]}
        assert types["analyze"]["enabled"] and types["prompt"]["executes_code"]

        routed = data(await client.call_tool("pools_execute", {"auto_route": True, "task_type": "echo",
                                                               "strategy": "affinity", "affinity_key": name}))
        assert routed["routing"]["strategy"] == "affinity" and routed["task"]["state"] == "completed"
        spread = data(await client.call_tool("pools_distribute", {"task_type": "echo", "strategy": "map_reduce",
                                                                  "payload": {"items": list(range(50))}},
                                             progress_callback=on_progress))
        assert spread["successful"] == spread["total"] and spread["result"]["count"] == 50
        assert data(await client.call_tool("pools_rebalance", {}))["strategy"] == "least_loaded"
        queued = data(await client.call_tool("pools_execute", {"pool": name, "task_type": "echo",
                                                               "payload": {"x": 1}, "wait": False}))
        assert not queued["finished"]
        closed = data(await client.call_tool("pools_close", {"pool": name}))
        assert closed["status"] == "stopped"


async def test_wrong_inputs_are_errors_that_name_the_field(server: str) -> None:
    async with Client(server) as client:
        await check_bad_inputs(client)


def test_health_endpoints(server: str) -> None:
    base = server.removesuffix("/mcp")
    for path in ("/health", "/healthz"):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "ok"


async def test_execute_is_detached_from_the_call(server: str, tmp_path: Path) -> None:
    """Cancelling the MCP call leaves the task running; its result is readable later."""
    import anyio

    gate = tmp_path / "gate"
    args = {"task_type": "python", "pool": "default",
            "payload": {"target": "tests.helpers.tasks:wait_for_file", "args": [str(gate)]}}
    async with Client(server) as client, Client(server) as observer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "pools_execute", args)
            await wait_until(lambda: len(started_markers(gate)) == 1, what="the task to start")
            running = data(await observer.call_tool("pools_tasks", {"state": "running", "task_type": "python"}))
            (task,) = [t for t in running["tasks"] if t["payload"]["args"] == [str(gate)]]
            tg.cancel_scope.cancel()  # the agent gives up on the call
        still = data(await observer.call_tool("pools_task", {"task_id": task["task_id"]}))
        assert still["state"] == "running"
        gate.touch()
        for _ in range(1000):
            done = data(await observer.call_tool("pools_task", {"task_id": task["task_id"]}))
            if done["state"] != "running":
                break
            await anyio.sleep(0.02)
        assert done["state"] == "completed" and done["result"]["value"]["end"] >= done["result"]["value"]["start"]
