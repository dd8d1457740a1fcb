"""A stand-in for the released Session-Buddy, built from its captured tool list
(session_buddy_tools.json, made by capture_session_buddy.py from session-buddy 0.23.0).

Every tool is listed with the release's own input schema and every call is checked against it
the way the release checks (an unknown argument is refused: "Unexpected keyword argument"),
so the stand-in can never accept what the real one rejects. Answers are prose, as the
release's are. With --pool-tools it also serves the pool tools its code has but `start` does
not register (a Session-Buddy built that way), whose workers only echo.

Usage: python -m tests.helpers.text_peer PORT [--pool-tools]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent

CAPTURE = json.loads((Path(__file__).with_name("session_buddy_tools.json")).read_text())
RELEASE = CAPTURE["session_buddy"]


def released_tools(pool_tools: bool = False) -> dict[str, dict[str, Any]]:
    """name -> input schema, as the release lists them."""
    tools = {t["name"]: t["inputSchema"] for t in CAPTURE["tools"]}
    if pool_tools:
        tools.update({t["name"]: t["inputSchema"] for t in CAPTURE["pool_tools"]})
    return tools


def refusal(tool: str, arguments: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """What the release says to arguments its schema does not take (None: it takes them)."""
    import jsonschema

    props = schema.get("properties", {})
    for name in arguments:
        if name not in props:
            return (f"1 validation error for call[{tool}]\n{name}\n  Unexpected keyword argument "
                    f"[type=unexpected_keyword_argument, input_value={arguments[name]!r}]")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.path) or next(
            (r for r in schema.get("required", []) if r not in arguments), "")
        return f"1 validation error for call[{tool}]\n{where}\n  {err.message}"
    return None


class TextPeer(MCPServer):
    def __init__(self, pool_tools: bool) -> None:
        self.schemas = released_tools(pool_tools)

        async def stub() -> str:  # listing only: call_tool answers
            raise NotImplementedError

        listed = [Tool.from_function(stub, name=name, structured_output=False).model_copy(
            update={"parameters": schema}) for name, schema in self.schemas.items()]
        super().__init__("session-buddy", version=RELEASE, log_level="WARNING", tools=listed)
        self.pools: dict[str, int] = {}
        self.reflections: list[str] = []

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        schema = self.schemas.get(name)
        if schema is None:
            return CallToolResult(content=[TextContent(type="text", text=f"Unknown tool: {name}")], is_error=True)
        refused = refusal(name, arguments, schema)
        if refused:
            return CallToolResult(content=[TextContent(type="text", text=refused)], is_error=True)
        try:
            text = self.answer(name, arguments)
        except ValueError as exc:
            return CallToolResult(content=[TextContent(type="text", text=f"Error executing tool {name}: {exc}")],
                                  is_error=True)
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content={"result": text})

    def answer(self, name: str, args: dict[str, Any]) -> str:
        if name == "store_reflection":
            self.reflections.append(args["content"])
            return f"💾 Reflection stored successfully!\n📝 Content: {args['content']}"
        if name == "quick_search":
            words = str(args["query"]).lower().split()
            hits = [r for r in self.reflections if all(w in r.lower() for w in words)]
            if not hits:
                return f"🔍 Quick search for: '{args['query']}'\n❌ No results found"
            return (f"🔍 Quick search for: '{args['query']}'\n📊 Found results (showing top 1)\n"
                    f"📝 {hits[0]}\n📅 Date: Unknown")
        if name == "create_pool":
            pool_id = args.get("pool_id") or "pool_1"
            self.pools[pool_id] = 0
            return f"Created pool {pool_id} with 3 workers."
        if name in ("execute_on_pool", "get_pool_status", "execute_batch_on_pool") and \
                args["pool_id"] not in self.pools:
            raise ValueError(f"Pool {args['pool_id']} not found")
        if name == "execute_on_pool":
            self.pools[args["pool_id"]] += 1
            return f"Worker echo: {args['prompt']}"
        if name == "get_pool_status":
            return f"Pool {args['pool_id']}: 3 workers, {self.pools[args['pool_id']]} tasks executed."
        if name == "delete_pool":
            self.pools.pop(args["pool_id"], None)
            return f"Deleted pool {args['pool_id']}."
        if name == "get_liveness":
            return "alive"
        return f"{name}: ok"


def build(pool_tools: bool) -> TextPeer:
    server = TextPeer(pool_tools)

    @server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(request):  # type: ignore[no-untyped-def]
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    return server


def main() -> None:
    import anyio

    port = int(sys.argv[1])
    server = build("--pool-tools" in sys.argv)
    print(f"text peer serving at http://127.0.0.1:{port}/mcp (state none)", flush=True)
    anyio.run(lambda: server.run_streamable_http_async(host="127.0.0.1", port=port))


if __name__ == "__main__":
    main()
