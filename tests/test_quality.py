"""Lint and type checks run with the tests, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "--no-cache", ".")  # no .ruff_cache/ in the checkout
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_library_and_server() -> None:
    result = run("mypy", "--cache-dir", "/dev/null")  # no .mypy_cache/ in the checkout
    assert result.returncode == 0, result.stdout + result.stderr


def test_pools_never_imports_the_server_or_the_cli() -> None:
    import re

    forbidden = re.compile(r"^\s*(from|import)\s+(mcp_server|cli|cli_render)\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "pools").rglob("*.py") if forbidden.search(p.read_text())]
    assert offenders == []
