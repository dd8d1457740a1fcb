"""The MCP server: every ToolSpec becomes a tool over one PoolManager.

The input schema an agent sees is the input model's JSON schema, and the same model
validates the arguments (mcp_server/toolserver.py). Domain errors come back as `isError`
results whose one text block is the JSON `{"error": {code, message, field}}`; only
protocol faults raise.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.types import CallToolResult, ResourceLink, ResourceTemplate, TextContent, ToolAnnotations
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

from mcp_server import __version__, results
from mcp_server.registry import TOOLS, ToolSpec
from mcp_server.tools import HANDLERS
from mcp_server.toolserver import ModelTool, ModelToolServer, Progress
from pools import jsontext
from pools.manager import PoolManager

log = logging.getLogger("mahavishnu.server")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
READS_FILES = frozenset({"pools_execute", "pools_distribute", "pools_discover", "pools_credentials"})
ROOTS_TIMEOUT = 10.0

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


class PoolsServer(ModelToolServer):
    """The tools, plus the resources that carry what is too large to inline (mcp_server/results.py)."""

    def __init__(self, manager: PoolManager, log_level: LogLevel, follow_client_roots: bool = False) -> None:
        super().__init__("mahavishnu", title="Mahavishnu Pools", version=__version__, instructions=INSTRUCTIONS,
                         log_level=log_level, tools=[model_tool(spec, manager) for spec in TOOLS])
        self.manager = manager
        self.follow_client_roots = follow_client_roots
        self.blobs = results.Blobs(manager.settings.home / "results", manager.settings.retention_days * 86400)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if self.follow_client_roots and name in READS_FILES and context is not None:
            await self._refresh_client_roots(context)
        return await super().call_tool(name, arguments, context)

    async def _refresh_client_roots(self, context: Any) -> None:
        """Over stdio the client is the one user of this server: when it declares MCP roots, file
        access narrows to paths inside both its roots and the operator's. Asked before each call
        that reads files, so a changed roots list counts at once."""
        import asyncio
        import warnings
        from urllib.parse import unquote, urlsplit

        try:
            session = context.session
            capabilities = session.client_capabilities
        except Exception:  # no request context (an in-process call): nothing to narrow by
            return
        if capabilities is None or capabilities.roots is None:
            self.manager.set_client_roots(None)
            return
        if not getattr(session, "can_send_request", True):
            # The 2026-07-28 protocol deprecates roots (SEP-2577) and this call has no channel to ask.
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # roots are deprecated by 2026-07-28; clients still send them
                listed = await asyncio.wait_for(session.list_roots(), ROOTS_TIMEOUT)
        except Exception:
            log.warning("the client declares roots but did not list them; keeping the last list", exc_info=True)
            return
        paths = [unquote(urlsplit(str(r.uri)).path) for r in listed.roots if str(r.uri).startswith("file://")]
        self.manager.set_client_roots(paths)

    def shape(self, spec: ModelTool, output: BaseModel) -> CallToolResult:
        # A task's result or a map_reduce's reduced result goes on as the model holds it, not as a
        # JSON-mode copy (the SDK makes its own when it sends the answer). The size check encodes it
        # strictly: what pydantic-core cannot encode is dumped the usual way (and fails the usual way).
        data = jsontext.dump(output, by_alias=True)
        try:
            text: str | None = to_json(data).decode()
        except (PydanticSerializationError, ValueError, TypeError):
            data, text = output.model_dump(mode="json", by_alias=True), None
        data, links, text = results.shape(data, self.manager.settings.inline_result_max_bytes, self.blobs, text)
        if text is None:  # values moved behind links: the rest is small
            text = jsontext.dumps(data)
        if len(text) > results.TEXT_COPY_MAX:  # not twice: the structured content has it all
            text = f"{spec.name}: the answer is in structuredContent ({len(text)} characters)"
        content: list[Any] = [TextContent(type="text", text=text)]
        content += [ResourceLink(type="resource_link", uri=link.uri, name=link.uri.removeprefix("mahavishnu://"),
                                 mime_type=link.mime_type, size=link.size) for link in links]
        return CallToolResult(content=content, structured_content=data)

    async def list_resource_templates(self) -> list[ResourceTemplate]:
        described = "Too large to inline in a tool answer; read in pages (_meta mahavishnu/next is the next page)."
        return [ResourceTemplate(uri_template=results.URI_TEMPLATE_TASK, name="task-value",
                                 title="A task's result or payload", description=described,
                                 mime_type="application/json"),
                ResourceTemplate(uri_template=results.URI_TEMPLATE_DISTRIBUTION, name="distribution-result",
                                 title="A map_reduce distribution's reduced result", description=described,
                                 mime_type="application/json")]

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        if not str(uri).startswith("mahavishnu://"):
            return await super().read_resource(uri, context)
        try:
            text, meta = results.read_page(self.manager.store, self.blobs, str(uri))
        except results.NotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return [ReadResourceContents(content=text, mime_type="application/json", meta=meta)]


def build_server(manager: PoolManager, *, log_level: LogLevel = "INFO",
                 follow_client_roots: bool = False) -> PoolsServer:
    """The MCP server over `manager`; the caller starts and closes the manager. `follow_client_roots`
    (stdio): a client's declared MCP roots narrow the file roots."""
    return PoolsServer(manager, log_level, follow_client_roots)
