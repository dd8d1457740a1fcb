"""An MCPServer whose tools are (input model, output model, handler) triples, and the one
error shape every tool of ours answers with.

The SDK validates arguments itself before a tool runs and answers a bad one with plain
text (a pydantic message and docs URL, no code, no field), and it quietly drops keys the
signature does not name. So `call_tool` is ours: the raw arguments are validated against
the tool's pydantic input model (`extra="forbid"`), the very model whose JSON schema the
tool publishes, and every failure becomes the same `isError` result:

    {"isError": true, "content": [{"type": "text",
     "text": "{\"error\": {\"code\": \"invalid_input\", \"message\": \"...\", \"field\": \"timeout\"}}"}]}

There is no `structuredContent` on an error: the TypeScript SDK validates any
structuredContent against the tool's output schema, error or not, and an error body never
matches a result schema. The JSON text is what every client can read.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from mcp_server.schemas import ErrorInfo, ErrorOutput
from pools.errors import PoolError, describe_validation_error

log = logging.getLogger("mahavishnu.server")
X_MCP_HEADER = "x-mcp-header"  # the JSON-schema annotation that makes a property an HTTP header

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
# A handler gets the validated input and a progress callback; it returns its output model,
# or raises PoolError (becomes the error result).
Handler = Callable[[Any, Progress], Awaitable[BaseModel]]


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return ErrorOutput(error=ErrorInfo(code=code, message=message, field=field)).model_dump(mode="json")


def error_result(code: str, message: str, field: str | None = None) -> CallToolResult:
    text = json.dumps(error_body(code, message, field), ensure_ascii=False)
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def wire_form(result: CallToolResult) -> dict[str, Any] | CallToolResult:
    """`result` as the dict the SDK would dump it to, its structuredContent as it is (not walked)."""
    if result.structured_content is None:
        return result
    wire: dict[str, Any] = result.model_copy(update={"structured_content": None}).model_dump(
        by_alias=True, mode="json", exclude_none=True)
    wire["structuredContent"] = result.structured_content
    return wire


@dataclass(frozen=True)
class ModelTool:
    name: str
    title: str | None
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    handler: Handler
    annotations: ToolAnnotations


def _takes_json(annotation: Any) -> bool:
    """dict/list fields: some hosts send them as JSON text, which the SDK used to accept."""
    origin = get_origin(annotation)
    if origin in (dict, list) or annotation in (dict, list):
        return True
    return any(_takes_json(a) for a in get_args(annotation)) if origin is not None else False


def validate_arguments(model: type[BaseModel], arguments: dict[str, Any]) -> BaseModel:
    """Raw arguments -> the input model, raising InvalidInput-shaped ValidationError or UnknownArguments."""
    unknown = sorted(set(arguments) - set(model.model_fields))
    if unknown:
        takes = ", ".join(model.model_fields) or "no arguments"
        raise UnknownArguments(f"unknown argument(s): {', '.join(unknown)}; this tool takes {takes}",
                               field=unknown[0])
    values = dict(arguments)
    for name, info in model.model_fields.items():
        value = values.get(name)
        if isinstance(value, str) and value[:1] in "[{" and _takes_json(info.annotation):
            with contextlib.suppress(ValueError):  # else the model's own error names the field
                values[name] = json.loads(value)
    return model.model_validate(values)


class UnknownArguments(PoolError):
    code = "invalid_input"


def _listing(spec: ModelTool) -> Tool:
    """The SDK's Tool for tools/list: the output schema from a stub's return annotation, the
    input schema straight from the input model (with additionalProperties: false)."""
    async def stub() -> Any:  # never called: ModelToolServer.call_tool runs the handler
        raise NotImplementedError

    stub.__signature__ = inspect.Signature([], return_annotation=spec.output_model)  # type: ignore[attr-defined]
    stub.__annotations__ = {"return": spec.output_model}
    tool = Tool.from_function(stub, name=spec.name, title=spec.title, description=spec.description,
                              annotations=spec.annotations, structured_output=True)
    return tool.model_copy(update={"parameters": spec.input_model.model_json_schema()})


class ModelToolServer(MCPServer):
    """MCPServer whose tools are ModelTools, validated and answered in one shape."""

    def __init__(self, *args: Any, tools: Sequence[ModelTool], **kwargs: Any) -> None:
        self.model_tools = {t.name: t for t in tools}
        listed = [_listing(t) for t in tools]
        # Input schemas that declare an Mcp-Param-* header (x-mcp-header); see _tool_input_schema.
        self._header_schemas = {t.name: t.parameters for t in listed if X_MCP_HEADER in json.dumps(t.parameters)}
        super().__init__(*args, tools=listed, **kwargs)

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        """The SDK asks this on every HTTP tools/call with arguments, and walks the schema it gets
        twice to compare Mcp-Param-* headers with the arguments (a fifth of the server time an
        execute took beyond a ping). Only a schema that declares such a header can fail that
        check, so only those are handed over; the others skip a walk that could find nothing."""
        if name in self.model_tools:
            return self._header_schemas.get(name)
        return super()._tool_input_schema(name)

    async def _handle_call_tool(self, ctx: Any, params: Any) -> Any:
        """The SDK's tools/call handler, answering with the result's wire form. A handler may return a
        dict (mcp.server.context.HandlerResult), which the SDK's runner copies where it would dump a
        model, and so walk a large structuredContent (a map_reduce's 20,000 items) once more before
        it checks the result against the protocol's schema and dumps it again anyway. The structured
        content goes on as it is; everything else is the model's own dump."""
        result = await super()._handle_call_tool(ctx, params)
        return wire_form(result) if isinstance(result, CallToolResult) else result

    def shape(self, spec: ModelTool, output: BaseModel) -> CallToolResult:
        """Output model -> the tool result. Subclasses keep large parts out of the response."""
        data = output.model_dump(mode="json", by_alias=True)
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(data, ensure_ascii=False))],
                              structured_content=data)

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context | None = None) -> Any:
        spec = self.model_tools.get(name)
        if spec is None:
            try:
                return await super().call_tool(name, arguments, context)
            except ToolError:
                return error_result("unknown_tool", f"no tool named {name!r}; tools/list shows the tools", "name")
        ctx = context if context is not None else Context(mcp_server=self)

        async def progress(done: float, total: float | None, message: str | None) -> None:
            try:
                await ctx.report_progress(done, total, message)
            except Exception:  # a client that went away must not fail the call's work
                log.debug("progress notification not delivered", exc_info=True)

        try:
            inp = validate_arguments(spec.input_model, arguments)
            return self.shape(spec, await spec.handler(inp, progress))
        except ValidationError as exc:
            message, field = describe_validation_error(exc)
            if field is None:  # a check across fields: name the first one its message names
                field = next((f for f in spec.input_model.model_fields if re.search(rf"\b{f}\b", message)), None)
            return error_result("invalid_input", message, field)
        except PoolError as exc:
            return error_result(exc.code, exc.message, exc.field)
        except ToolError as exc:
            return error_result("error", str(exc))
        except Exception:
            # A bug of ours: the traceback stays in the server's log, the caller gets a clean error.
            log.exception("tool %s failed unexpectedly", name)
            return error_result("internal_error", f"{name} failed unexpectedly; the server log has the details")
