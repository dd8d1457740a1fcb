"""Wait on a condition with a deadline: tests never sleep a guessed amount."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until_sync(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
                    interval: float = 0.02) -> None:
    """`interval` only spaces the checks (a costly condition, like a PromQL query, is not run 50 times a second)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its reaper counts), race-free against reaping."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def started_markers(gate: Path) -> list[Path]:
    return sorted(gate.parent.glob(gate.name + ".started.*"))
