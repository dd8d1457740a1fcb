"""Shared helpers for benchmarks: best-of-N timing and a printed comparison."""

from __future__ import annotations

import atexit
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def scratch_dir() -> Path:
    """A private temporary directory for one measurement, removed when the benchmark exits."""
    path = Path(tempfile.mkdtemp(prefix="mahavishnu-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def report(title: str, ours_name: str, ours: list[float], base_name: str, base: list[float],
           unit: str = "tasks/s") -> float:
    """Print median rates and their ratio (ours / baseline); higher is better for rates."""
    o, b = statistics.median(ours), statistics.median(base)
    ratio = o / b
    print(f"{title}")
    print(f"  {base_name:<36} {b:>10,.0f} {unit}  (runs: {', '.join(f'{x:,.0f}' for x in base)})")
    print(f"  {ours_name:<36} {o:>10,.0f} {unit}  (runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"  ratio ours/baseline: {ratio:.2f}x")
    return ratio


async def _trust(name: str, result: Any) -> None:
    return None


def skip_output_check(client: Any) -> None:
    """As the `mahavishnu` CLI calls: no client-side jsonschema re-check of each tool result
    against the tool's output schema (the SDK's default client makes one)."""
    client.session.validate_tool_result = _trust
