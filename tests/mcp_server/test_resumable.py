"""A long call survives a dropped stream: event ids, the priming event, retry, and replay after
Last-Event-ID (mcp_server/events.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import JSONRPCNotification, JSONRPCRequest

from mcp_server.events import BoundedEventStore
from tests.helpers.proxy import CuttingProxy
from tests.helpers.replies import data
from tests.helpers.server import running_server, write_settings
from tests.helpers.waiting import started_markers, wait_until


async def test_an_execute_whose_stream_is_cut_mid_wait_gets_its_result(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    gate = tmp_path / "gate"
    args = {"task_type": "python", "pool": "default", "timeout": 120,
            "payload": {"target": "tests.helpers.tasks:wait_for_file", "args": [str(gate)]}}
    with running_server(home) as (url, _):
        async with CuttingProxy(urlsplit(url).port or 0) as proxy:
            progress: list[str | None] = []
            answer: dict[str, Any] = {}

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(message)

            http = httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=120))
            async with http, Client(streamable_http_client(proxy.url(), http_client=http), mode="legacy") as client, \
                    Client(url) as observer:

                async def call() -> None:
                    answer["result"] = await client.call_tool("pools_execute", args, progress_callback=on_progress)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await wait_until(lambda: len(started_markers(gate)) == 1 and bool(progress),
                                     what="the task to start and report progress")
                    before = proxy.accepted
                    proxy.hold()  # the network is down: reconnecting waits ...
                    assert proxy.cut() >= 1  # ... and the call's stream breaks mid-wait
                    seen = len(progress)
                    gate.touch()
                    running = data(await observer.call_tool("pools_tasks", {"task_type": "python"}))["tasks"][0]

                    async def finished() -> bool:
                        task = data(await observer.call_tool("pools_task", {"task_id": running["task_id"]}))
                        return bool(task["state"] == "completed")

                    with anyio.fail_after(60):
                        while not await finished():  # the result is sent while the client is away
                            await anyio.sleep(0.05)
                    proxy.release()  # the network is back: the client resumes with Last-Event-ID
            result = answer["result"]
            assert proxy.accepted > before  # it reconnected (with Last-Event-ID) through the proxy
            out = data(result)
            assert out["finished"] and out["task"]["state"] == "completed", out
            assert out["task"]["task_id"] == running["task_id"]
            assert len(progress) >= seen and progress[-1] == "completed"  # the final progress was replayed too


async def test_the_event_store_is_bounded_and_replays_one_stream() -> None:
    store = BoundedEventStore(max_events=50, max_bytes=10_000)
    first = await store.store_event("a", None)  # a priming event
    for i in range(5):
        await store.store_event("a", JSONRPCNotification(jsonrpc="2.0", method="notifications/progress",
                                                         params={"progressToken": 1, "progress": i}))
        await store.store_event("b", JSONRPCRequest(jsonrpc="2.0", id=i, method="ping"))
    replayed: list[Any] = []

    async def send(event: Any) -> None:
        replayed.append(event)

    assert await store.replay_events_after(first, send) == "a"
    assert [e.message.params["progress"] for e in replayed] == [0, 1, 2, 3, 4]
    assert [int(e.event_id) for e in replayed] == sorted(int(e.event_id) for e in replayed)
    for i in range(500):  # far more than it may keep
        await store.store_event("c", JSONRPCNotification(jsonrpc="2.0", method="notifications/message",
                                                         params={"data": "x" * 100, "n": i}))
    assert store.count <= 50 and store.bytes <= 10_000
    assert await store.replay_events_after(first, send) is None  # dropped: nothing to replay
    assert await store.replay_events_after("not-an-id", send) is None
