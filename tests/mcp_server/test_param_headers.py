"""The SDK checks Mcp-Param-* headers of an HTTP tools/call against a schema it asks the server
for; ours hands over only schemas that declare such a header (the walk is costly and could find
nothing in the others). Both halves are checked with the SDK's own validator."""

from __future__ import annotations

from pathlib import Path

from mcp.shared.inbound import validate_mcp_param_headers
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from mcp_server.schemas import Pong
from mcp_server.server import build_server
from mcp_server.toolserver import ModelTool, ModelToolServer
from pools.manager import PoolManager
from tests.conftest import make_settings


class Routed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(json_schema_extra={"x-mcp-header": "Region"})


async def _pong(inp: object, progress: object) -> Pong:
    return Pong(version="0", server_time=0.0)


def test_only_a_schema_with_a_declared_header_is_handed_to_the_header_check(home: Path) -> None:
    server = build_server(PoolManager(make_settings(home)))
    headers = {"mcp-param-pool": "elsewhere", "mcp-param-task-type": "x"}
    for name, tool in server.model_tools.items():
        assert server._tool_input_schema(name) is None
        full = tool.input_model.model_json_schema()  # what the SDK would have walked: nothing to reject
        assert validate_mcp_param_headers(full, {"pool": "p", "task_type": "echo"}, headers) is None

    routed = ModelToolServer("t", tools=[ModelTool("routed", None, "d", Routed, Pong, _pong, ToolAnnotations())])
    schema = routed._tool_input_schema("routed")
    assert schema is not None and schema["properties"]["region"]["x-mcp-header"] == "Region"
    rejected = validate_mcp_param_headers(schema, {"region": "eu"}, {"mcp-param-region": "us"})
    assert rejected is not None  # a declared header that disagrees with its argument is still refused
    assert validate_mcp_param_headers(schema, {"region": "eu"}, {"mcp-param-region": "eu"}) is None
