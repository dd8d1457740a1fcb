"""specs/ is generated from the code; it must be current, and match what the server lists."""

from __future__ import annotations

import json
from pathlib import Path

from mcp import Client

from mcp_server import specs
from mcp_server.server import build_server
from pools.manager import PoolManager
from tests.conftest import make_settings


def test_specs_are_current() -> None:
    for path, text in specs.expected().items():
        assert path.exists(), f"{path} missing: run `python -m mcp_server.specs`"
        assert path.read_text() == text, f"{path} is stale: run `python -m mcp_server.specs`"


async def test_listed_schemas_match_the_specs(home: Path) -> None:
    documented = {t["name"]: t for t in json.loads((specs.SPECS / "tools.json").read_text())}
    async with PoolManager(make_settings(home)) as manager, Client(build_server(manager)) as client:
        listed = (await client.list_tools()).tools
    assert {t.name for t in listed} == set(documented)
    for tool in listed:
        doc = documented[tool.name]
        assert tool.description == doc["description"]
        assert tool.input_schema == doc["inputSchema"], tool.name  # what is served is what is documented
        assert tool.input_schema["additionalProperties"] is False, tool.name  # extra keys are refused
        assert set(tool.input_schema.get("required", [])) == set(doc["inputSchema"].get("required", []))
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description") == doc["inputSchema"]["properties"][name].get("description")
        assert tool.output_schema is not None
        assert set(tool.output_schema["properties"]) == set(doc["outputSchema"]["properties"]), tool.name


def test_the_peer_keeps_session_buddys_tool_names_and_parameters() -> None:
    listed = {t["name"]: t for t in json.loads((specs.SPECS / "peer.json").read_text())}
    expected = {  # Session-Buddy's pool and memory tools (shared/DESIGN.md)
        "create_pool": ["pool_id"], "execute_on_pool": ["pool_id", "prompt", "context", "timeout"],
        "execute_batch_on_pool": ["pool_id", "prompts", "context", "timeout"], "check_pool_health": ["pool_id"],
        "get_pool_status": ["pool_id"], "list_pools": [], "delete_pool": ["pool_id", "timeout"],
        "store_reflection": ["content", "tags"], "store_conversation": ["content", "project", "metadata"],
        "search_conversations": ["query", "limit", "min_score", "project"], "get_liveness": [],
    }
    assert set(listed) == set(expected)
    for name, params in expected.items():
        assert set(listed[name]["inputSchema"].get("properties", {})) == set(params), name
