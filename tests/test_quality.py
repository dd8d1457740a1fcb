"""Lint and type checks run with the tests, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_library_and_server() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pools_never_imports_the_server_or_the_cli() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "pools").rglob("*.py")
                 if any(f"{kw} {mod}" in p.read_text() for kw in ("import", "from")
                        for mod in ("mcp_server", "cli", "cli_render", "mcp"))]
    assert offenders == []
