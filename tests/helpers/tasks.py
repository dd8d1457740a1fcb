"""Functions the `python` task type calls inside worker processes during tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def wait_for_file(path: str, limit: float = 60.0) -> dict[str, float | int]:
    """Block until `path` exists (the test's gate), then report when this ran."""
    start = time.time()
    marker = Path(path + f".started.{os.getpid()}")
    marker.write_text(str(start))
    deadline = start + limit
    while not Path(path).exists():
        if time.time() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.01)
    return {"start": start, "end": time.time(), "pid": os.getpid()}


def exit_now(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def pid() -> int:
    return os.getpid()


def spawn_sleeper(pidfile: str) -> None:
    """Start a grandchild process, record its pid, then hang: cancel must end both."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    Path(pidfile).write_text(str(child.pid))
    child.wait()
