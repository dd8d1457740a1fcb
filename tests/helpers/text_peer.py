"""A stand-in for the released Session-Buddy: the same tool names, prose answers, workers that
only echo, and (as in session-buddy 0.23.0) optionally no pool tools at all.

Usage: python -m tests.helpers.text_peer PORT [--no-pool-tools]
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer


def build(pool_tools: bool) -> MCPServer:
    server = MCPServer("session-buddy", log_level="WARNING")
    pools: dict[str, int] = {}
    reflections: list[str] = []

    def tool(fn):  # type: ignore[no-untyped-def]
        server.add_tool(fn, structured_output=False)  # prose, as the real one answers
        return fn

    if pool_tools:
        @tool
        def create_pool(pool_id: str | None = None) -> str:
            pools[pool_id or "pool_1"] = 0
            return f"Created pool {pool_id} with 3 workers."

        @tool
        def execute_on_pool(pool_id: str, prompt: str, context: dict | None = None,
                            timeout: float | None = None) -> str:
            if pool_id not in pools:
                raise ValueError(f"Pool {pool_id} not found")
            pools[pool_id] += 1
            return f"Worker echo: {prompt}"

        @tool
        def get_pool_status(pool_id: str) -> str:
            if pool_id not in pools:
                raise ValueError(f"Pool {pool_id} not found")
            return f"Pool {pool_id}: 3 workers, {pools[pool_id]} tasks executed."

        @tool
        def delete_pool(pool_id: str, timeout: float | None = None) -> str:
            pools.pop(pool_id, None)
            return f"Deleted pool {pool_id}."

    @tool
    def store_reflection(content: str, tags: list[str] | None = None) -> str:
        reflections.append(content)
        return f"Stored reflection #{len(reflections)}."

    @tool
    def quick_search(query: str, limit: int = 10) -> str:
        hits = [r for r in reflections if all(w.lower() in r.lower() for w in query.split())]
        return "\n".join(hits[:limit]) or "No results."

    @tool
    def get_liveness() -> str:
        return "alive"

    @server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(request):  # type: ignore[no-untyped-def]
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    return server


def main() -> None:
    import anyio

    port = int(sys.argv[1])
    server = build("--no-pool-tools" not in sys.argv)
    print(f"text peer serving at http://127.0.0.1:{port}/mcp (state none)", flush=True)
    anyio.run(lambda: server.run_streamable_http_async(host="127.0.0.1", port=port))


if __name__ == "__main__":
    main()
