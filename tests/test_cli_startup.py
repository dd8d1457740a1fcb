"""What a cold start of the CLI imports and builds: `--help` no tool model, a command only itself,
the HTTP client no trio (issue 16: `pools list` cold <= 1.3x `import mcp`, `--help` < 0.3 s)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from typer.core import TyperGroup

from mcp_server.registry import TOOLS
from tests.helpers.cli_app import pools_group
from tests.helpers.server import ROOT


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_imports_no_tool_model_and_no_sdk() -> None:
    out = python("import sys, cli\n"
                 "sys.argv = ['mahavishnu', '--help']\n"
                 "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
                 "print('loaded:', sorted(m for m in ('mcp', 'mcp_server.registry', 'mcp_server.schemas', "
                 "'pools.models', 'pydantic') if m in sys.modules))")
    assert "Commands" in out and "pools" in out
    assert out.splitlines()[-1] == "loaded: []"


def test_a_command_builds_only_itself(capsys: pytest.CaptureFixture[str]) -> None:
    group = pools_group()
    assert group.commands.built == {}  # type: ignore[attr-defined]
    with pytest.raises(SystemExit) as exited:
        group.main(["list", "--help"], prog_name="mahavishnu pools")
    assert exited.value.code == 0 and "--active-only" in capsys.readouterr().out
    assert set(group.commands.built) == {"list"}  # type: ignore[attr-defined]


def test_the_lazy_names_are_the_registry_in_order() -> None:
    group = pools_group()
    leaves = [t.command for t in TOOLS if " " not in t.command]
    assert list(group.commands) == [*leaves, "memory"]
    assert "memory" in group.commands and "nothing" not in group.commands and len(group.commands) == len(leaves) + 1
    memory = group.commands["memory"]
    assert isinstance(memory, TyperGroup)
    assert list(memory.commands) == [t.command.split(" ")[1] for t in TOOLS if t.command.startswith("memory ")]
    assert set(group.commands.built) == {"memory"}  # type: ignore[attr-defined]


def test_the_http_client_imports_no_trio_and_leaves_it_importable() -> None:
    if importlib.util.find_spec("trio") is None:
        pytest.skip("trio is not installed: nothing to keep out")
    out = python("import sys, cli\n"
                 "cli.import_http_without_trio()\n"
                 "import httpx2\n"
                 "httpx2.AsyncClient()\n"
                 "print('trio' in sys.modules)\n"
                 "import trio\n"
                 "print(trio.__name__)")
    assert out.split() == ["False", "trio"]
