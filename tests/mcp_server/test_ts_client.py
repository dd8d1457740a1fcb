"""Every tool through the TypeScript SDK (@modelcontextprotocol/sdk, the client most hosts use),
over HTTP and stdio: good input gets a result the SDK accepts against the output schema, and
every kind of bad input gets our error (code and field), never an SDK exception.

tests/ts_client is installed by .ci/setup (`npm ci`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp_server.registry import TOOLS
from tests.helpers.fuzz import DOMAIN_CASES, schema_cases, valid_plan
from tests.helpers.server import ROOT, cli_env, running_server, write_settings

CLIENT = ROOT / "tests" / "ts_client"


def run_node(plan: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is needed (see .ci/setup)"
    assert (CLIENT / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(), \
        "run `npm ci` in tests/ts_client (.ci/setup does)"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    done = subprocess.run([node, str(CLIENT / "call_tools.mjs"), str(path)], cwd=CLIENT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def check(plan_calls: list[dict[str, Any]], out: dict[str, Any],
          bad: list[tuple[str, dict[str, Any], str, str]]) -> None:
    assert set(out["tools"]) == {t.name for t in TOOLS}
    results = out["results"]
    good = len(plan_calls)
    for call, result in zip(plan_calls, results[:good], strict=True):
        assert "thrown" not in result, (call, result)
        assert not result["isError"], (call, result["text"])
        assert result["structuredContent"] is not None, call
    assert {c["tool"] for c in plan_calls} == {t.name for t in TOOLS}  # every tool with good input
    for (tool, args, code, field), result in zip(bad, results[good:], strict=True):
        assert "thrown" not in result, (tool, args, result["thrown"])  # the SDK accepted the error result
        assert result["isError"] and result["structuredContent"] is None, (tool, args, result)
        error = json.loads(result["text"])["error"]
        assert (error["code"], error["field"]) == (code, field), (tool, args, error)
        assert error["message"] and "pydantic" not in error["message"], error


def plan_calls(name: str, tmp_path: Path) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any], str, str]]]:
    bad = DOMAIN_CASES + schema_cases()
    return valid_plan(name, str(tmp_path / "never")), bad


def test_typescript_sdk_over_http(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    good, bad = plan_calls("ts-http", tmp_path)
    with running_server(home) as (url, _):
        out = run_node({"http": url, "calls": good + [{"tool": t, "args": a} for t, a, _, _ in bad]}, tmp_path)
    check(good, out, bad)


def test_typescript_sdk_over_stdio(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    good, bad = plan_calls("ts-stdio", tmp_path)
    stdio = {"command": sys.executable, "args": [str(ROOT / "cli.py"), "serve", "--stdio"], "env": cli_env(home),
             "cwd": str(ROOT)}
    out = run_node({"stdio": stdio, "calls": good + [{"tool": t, "args": a} for t, a, _, _ in bad]}, tmp_path)
    check(good, out, bad)
