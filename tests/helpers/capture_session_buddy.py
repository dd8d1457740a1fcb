"""Capture the released Session-Buddy's tool list (names and input schemas) into
tests/helpers/session_buddy_tools.json, which the test stand-ins are built from.

    ~/.pyenv/versions/3.13*/bin/python -m venv /tmp/sb && /tmp/sb/bin/pip install session-buddy==0.23.0
    python -m tests.helpers.capture_session_buddy /tmp/sb/bin/session-buddy

It serves the release the way `session-buddy start` does (start checks that port 8678 is free,
then calls `session_buddy.server_optimized.run_server`; this calls the same function on a free
port, and lists the same 49 tools), in a scratch HOME and working directory (it writes caches
there), and lists its tools over MCP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers.ports import free_port as _free_port

OUT = Path(__file__).with_name("session_buddy_tools.json")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def _list(url: str) -> list[dict[str, object]]:
    from mcp import Client

    async with Client(url) as client:
        tools = (await client.list_tools()).tools
    return [{"name": t.name, "inputSchema": t.input_schema} for t in sorted(tools, key=lambda t: t.name)]


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else "session-buddy"
    python = str(Path(binary).with_name("python"))  # the release's own interpreter (its venv)
    version = subprocess.run([python, "-c",
                              "import importlib.metadata as m; print(m.version('session-buddy'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    served = _serve_and_list(python, "")
    # Its pool tools exist in the release's code but `start` never registers them; importing their
    # module first does. Kept apart: a stand-in with pool tools is a Session-Buddy built that way.
    full = _serve_and_list(python, "import session_buddy.mcp.server; ")
    pool_tools = [t for t in full if t["name"] in POOL_TOOLS]
    OUT.write_text(json.dumps({"session_buddy": version, "tools": served, "pool_tools": pool_tools},
                              indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}: {len(served)} tools of session-buddy {version}, and {len(pool_tools)} pool tools")
    return 0


POOL_TOOLS = {"create_pool", "execute_on_pool", "execute_batch_on_pool", "check_pool_health", "get_pool_status",
              "list_pools", "delete_pool"}


def _serve_and_list(python: str, prelude: str) -> list[dict[str, object]]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as scratch:
        serve = f"{prelude}from session_buddy.server_optimized import run_server; " \
                f"run_server(host='127.0.0.1', port={port})"
        proc = subprocess.Popen([python, "-c", serve], cwd=scratch, env={**os.environ, "HOME": scratch},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 180
            while not _healthy(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"session-buddy did not answer on port {port}")
                time.sleep(0.2)
            return asyncio.run(_list(f"http://127.0.0.1:{port}/mcp"))
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
