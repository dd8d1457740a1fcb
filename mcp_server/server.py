"""The MCP server: every ToolSpec becomes a tool over one PoolManager.

The input schema an agent sees is the input model's JSON schema, and the same model
validates the arguments (mcp_server/toolserver.py). Domain errors come back as `isError`
results whose one text block is the JSON `{"error": {code, message, field}}`; only
protocol faults raise.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from mcp.types import ToolAnnotations
from pydantic import BaseModel

from mcp_server import __version__
from mcp_server.registry import TOOLS, ToolSpec
from mcp_server.tools import HANDLERS
from mcp_server.toolserver import ModelTool, ModelToolServer, Progress
from pools.manager import PoolManager

log = logging.getLogger("mahavishnu.server")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

INSTRUCTIONS = (
    "Mahavishnu Pools runs tasks on pools of workers. Start with pools_list and pools_task_types; run work "
    "with pools_execute (it waits up to timeout and the task keeps running after; poll pools_task by id). "
    "An error is an isError result whose text is the JSON {\"error\": {code, message, field}}; field names "
    "the bad argument."
)


def model_tool(spec: ToolSpec, manager: PoolManager) -> ModelTool:
    handler = HANDLERS[spec.name]

    async def run(inp: Any, progress: Progress) -> BaseModel:
        return await handler(manager, inp, progress)

    return ModelTool(spec.name, spec.title, spec.description, spec.input_model, spec.output_model, run,
                     ToolAnnotations(title=spec.title, read_only_hint=spec.read_only,
                                     destructive_hint=spec.destructive, idempotent_hint=spec.idempotent,
                                     open_world_hint=False))


def build_server(manager: PoolManager, *, log_level: LogLevel = "INFO") -> ModelToolServer:
    """The MCP server over `manager`; the caller starts and closes the manager."""
    return ModelToolServer("mahavishnu", title="Mahavishnu Pools", version=__version__, instructions=INSTRUCTIONS,
                           log_level=log_level, tools=[model_tool(spec, manager) for spec in TOOLS])
