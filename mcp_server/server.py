"""The MCP server: every ToolSpec becomes a tool over one PoolManager.

Tool signatures are generated from the input models, so the schema an agent sees is
the pydantic model's. Domain errors come back as `isError` results whose structured
content is `{"error": {code, message, field}}`; only protocol faults raise.
"""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from mcp_server import __version__
from mcp_server.registry import TOOLS, ToolSpec
from mcp_server.schemas import ErrorInfo, ErrorOutput
from mcp_server.tools import HANDLERS
from pools.errors import PoolError, describe_validation_error
from pools.manager import PoolManager

log = logging.getLogger("mahavishnu.server")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

INSTRUCTIONS = (
    "Mahavishnu Pools runs tasks on pools of workers. Start with pools_list and pools_task_types; run work "
    "with pools_execute (it waits up to timeout and the task keeps running after; poll pools_task by id). "
    "Errors carry structuredContent.error.code and name the bad field."
)


def error_result(code: str, message: str, field: str | None = None) -> CallToolResult:
    body = ErrorOutput(error=ErrorInfo(code=code, message=message, field=field))
    return CallToolResult(content=[TextContent(type="text", text=f"{code}: {message}")],
                          structured_content=body.model_dump(mode="json"), is_error=True)


def _raw_arguments(ctx: Context) -> dict[str, Any]:
    """The arguments as sent. The SDK drops unknown keys before the tool runs; a typo such as
    `min_worker` must be an error, not a silently ignored option. (Private attribute: no public one.)"""
    params = getattr(ctx, "_input_params", None)
    arguments = getattr(params, "arguments", None)
    return arguments if isinstance(arguments, dict) else {}


def _tool_function(spec: ToolSpec, manager: PoolManager) -> Any:
    handler = HANDLERS[spec.name]
    model = spec.input_model

    async def tool(**kwargs: Any) -> Any:
        ctx: Context = kwargs.pop("ctx")

        async def progress(done: float, total: float | None, message: str | None) -> None:
            try:
                await ctx.report_progress(done, total, message)
            except Exception:  # a client that went away must not fail the call's work
                log.debug("progress notification not delivered", exc_info=True)

        unknown = sorted(set(_raw_arguments(ctx)) - set(model.model_fields))
        if unknown:
            return error_result("invalid_input", f"unknown argument(s): {', '.join(unknown)}; this tool takes "
                                f"{', '.join(model.model_fields) or 'no arguments'}", unknown[0])
        try:
            inp = model.model_validate(kwargs)
        except ValidationError as exc:
            message, field = describe_validation_error(exc)
            return error_result("invalid_input", message, field)
        try:
            result: BaseModel = await handler(manager, inp, progress)
        except PoolError as exc:
            return error_result(exc.code, exc.message, exc.field)
        return result

    params = []
    annotations: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        default = inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
        meta = info._copy()
        meta.default = ...  # the default lives on the parameter
        meta.default_factory = None
        annotation = Annotated[info.annotation, meta]  # type: ignore[name-defined]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
        annotations[name] = annotation
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    annotations["ctx"] = Context
    annotations["return"] = spec.output_model
    tool.__signature__ = inspect.Signature(params, return_annotation=spec.output_model)  # type: ignore[attr-defined]
    tool.__annotations__ = annotations
    tool.__name__ = spec.name
    tool.__doc__ = spec.description
    return tool


def build_server(manager: PoolManager, *, log_level: LogLevel = "INFO") -> MCPServer:
    """An MCPServer over `manager`; the caller starts and closes the manager."""
    server = MCPServer("mahavishnu", title="Mahavishnu Pools", version=__version__, instructions=INSTRUCTIONS,
                       log_level=log_level)
    for spec in TOOLS:
        server.add_tool(
            _tool_function(spec, manager), name=spec.name, title=spec.title, description=spec.description,
            annotations=ToolAnnotations(title=spec.title, read_only_hint=spec.read_only,
                                        destructive_hint=spec.destructive, idempotent_hint=spec.idempotent,
                                        open_world_hint=False),
            structured_output=True,
        )
    return server
