"""The peer server (`mahavishnu peer serve`) is as strict as the main one: annotations on every
tool, inputs checked against the published schema with unknown arguments refused by name, the
same error shape, and a registration that fails half-way leaves nothing behind on either side."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mcp import Client

from mcp_server.peer import build_peer
from pools.errors import PoolError
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolType
from pools.peer_client import PeerClient
from tests.helpers.replies import data, tool_error
from tests.test_peers import peer, settings_for


async def test_every_peer_tool_is_annotated_and_refuses_what_it_does_not_take(manager: PoolManager) -> None:
    async with Client(build_peer(manager)) as client:
        tools = (await client.list_tools()).tools
        assert len(tools) == 11
        for tool in tools:
            assert tool.annotations is not None and tool.annotations.read_only_hint is not None, tool.name
            assert tool.input_schema.get("additionalProperties") is False, tool.name
        hints = {t.name: t.annotations for t in tools}
        assert hints["list_pools"].read_only_hint and hints["delete_pool"].destructive_hint  # type: ignore[union-attr]

        error = tool_error(await client.call_tool("create_pool", {"pool_id": "p1", "pool_size": 5}))
        assert (error["code"], error["field"]) == ("invalid_input", "pool_size")
        assert "unknown argument(s): pool_size" in error["message"]
        error = tool_error(await client.call_tool("get_pool_status", {}))
        assert (error["code"], error["field"]) == ("invalid_input", "pool_id")
        error = tool_error(await client.call_tool("execute_on_pool", {"pool_id": "p1", "prompt": "x", "timeout": -1}))
        assert (error["code"], error["field"]) == ("invalid_input", "timeout")
        error = tool_error(await client.call_tool("get_pool_status", {"pool_id": "ghost"}))
        assert (error["code"], error["field"]) == ("pool_not_found", "pool_id")
        error = tool_error(await client.call_tool("search_conversations", {"query": "x", "limit": "many"}))
        assert (error["code"], error["field"]) == ("invalid_input", "limit")
        assert data(await client.call_tool("get_liveness", {}))["alive"] is True


async def test_a_registration_that_fails_half_way_leaves_no_pool_on_the_peer(tmp_path: Path) -> None:
    """Two registrations race for one name: both make their pool on the peer before the second
    finds the name taken. The loser must delete its peer pool again, and keep nothing here."""
    with peer(tmp_path / "peer") as (url, _):
        async with PoolManager(settings_for(tmp_path / "main")) as m:
            outcomes = await asyncio.gather(
                *(m.register(PoolConfig(name="twin", type=PoolType.SESSION_BUDDY, endpoint=url)) for _ in range(2)),
                return_exceptions=True)
            won = [o for o in outcomes if not isinstance(o, BaseException)]
            lost = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(won) == 1 and len(lost) == 1, outcomes
            assert isinstance(lost[0], PoolError) and lost[0].code == "conflict", lost[0]
            assert [p.name for p in m.list_pools()] == ["twin"]
            on_peer = await PeerClient(url).call("list_pools", {})
            assert [p["pool_id"] for p in on_peer.data["pools"]] == [won[0].pool_id]  # type: ignore[index]


async def test_the_peer_refuses_unknown_arguments_over_http(tmp_path: Path) -> None:
    with peer(tmp_path / "peer") as (url, _):
        reply = await PeerClient(url).call("store_reflection", {"content": "x", "importance": 3})
        assert reply.is_error and reply.code == "invalid_input" and reply.error["field"] == "importance"
