"""Functions the `python` task type calls inside worker processes during tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def wait_for_file(path: str, limit: float = 300.0) -> dict[str, float | int]:
    """Block until `path` exists (the test's gate), then report when this ran. `limit` only keeps a
    worker from waiting forever on a gate a failed test never opens: it must outlast every step a
    test takes between starting the task and opening the gate, however busy the machine."""
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


def _record_pid(pidfile: str, pid: int) -> None:
    """Write the pid under a temporary name, then rename: a test that sees the file sees the pid."""
    tmp = f"{pidfile}.tmp"
    Path(tmp).write_text(str(pid))
    os.replace(tmp, pidfile)


def spawn_sleeper(pidfile: str) -> None:
    """Start a grandchild process, record its pid, then hang: cancel must end both."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    _record_pid(pidfile, child.pid)
    child.wait()


def _daemon(pidfile: str) -> None:
    """Start a daemon the classic way (fork, setsid, fork again; the middle process exits) and
    record its pid: it escapes the task's process group and its parent."""
    import subprocess
    import sys

    code = ("import os, sys, time\n"
            "os.setsid()\n"
            "if os.fork():\n    os._exit(0)\n"
            "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
            "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
            "time.sleep(600)\n")
    subprocess.run([sys.executable, "-c", code, pidfile], check=True)
    deadline = time.time() + 30
    while not Path(pidfile).exists() and time.time() < deadline:
        time.sleep(0.01)


def leave_background_child(pidfile: str) -> int:
    """Start a child in the task's own process group, record its pid, return without waiting."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    _record_pid(pidfile, child.pid)
    return child.pid


def leave_setsid_child(pidfile: str) -> None:
    """Start a child in a session of its own and return without waiting for it."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    _record_pid(pidfile, child.pid)


def leave_daemon(pidfile: str) -> None:
    _daemon(pidfile)


def daemon_then_exit(pidfile: str, code: int) -> None:
    """Start a daemon, then crash the worker."""
    _daemon(pidfile)
    os._exit(code)


def daemon_then_wait(pidfile: str, gate: str) -> dict[str, float | int]:
    """Start a daemon, then block on the gate (for timeouts, cancels, owner deaths)."""
    _daemon(pidfile)
    return wait_for_file(gate)


def hold_the_gil(marker: str) -> bool:
    """Record that it started, then run a regex that backtracks for hours without ever
    releasing the GIL: no thread of this process runs until it ends."""
    import re

    _record_pid(marker, os.getpid())
    return re.match(r"(a+)+$", "a" * 64 + "b") is not None


def big_text(size: int, seed: int = 0) -> str:
    """A deterministic string of `size` characters with quotes, backslashes, newlines and non-ASCII
    in it, so that every layer's escaping is exercised when it travels back."""
    import random

    alphabet = 'abcdefghij KLMNOP 0123456789 "\\\n\t é€😀{}[],:'
    rng = random.Random(seed)
    return "".join(rng.choices(alphabet, k=size))


def exit_after_gate(gate: str, code: int) -> None:
    """Block on the gate, then crash the worker."""
    wait_for_file(gate)
    os._exit(code)


def append_line(path: str, text: str) -> int:
    """Append one line (tests read the order tasks ran in); returns the worker's pid."""
    with open(path, "a") as fh:
        fh.write(text + "\n")
    return os.getpid()
