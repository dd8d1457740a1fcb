"""One owner per state directory: an advisory lock the OS releases when its holder dies.

The lock file holds the owner's pid and when it took the directory, so a second process
can say at once who is in the way (pid, command line, since when) and what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import datetime
from pathlib import Path

from pools.errors import StoreBusy
from pools.private import private_file

WAIT = 0.8  # an owner that is just closing gets this long; nothing waits for longer


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.path = home / "owner.lock"
        self._fd: int | None = None

    def acquire(self, wait: float = WAIT) -> None:
        private_file(self.path)  # and its directory 0700: the state directory starts private
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 256, 0).decode(errors="replace")
                    os.close(fd)
                    raise StoreBusy(describe_owner(self.path.parent, holder)) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def describe_owner(home: Path, holder: str) -> str:
    """Who owns `home` (from its lock file's text) and what the user can do about it."""
    try:
        info = json.loads(holder)
        pid, since = int(info["pid"]), float(info["since"])
    except (ValueError, KeyError, TypeError):
        return (f"another process owns the state directory {home}; stop it, or set MAHAVISHNU_HOME to "
                "another directory")
    command = _command_line(pid)
    when = datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M:%S")
    who = f"pid {pid}" + (f", `{command}`" if command else "") + f", since {when}"
    server = _server_url(home, pid)
    if server:
        return (f"a mahavishnu server ({who}) owns the state directory {home}; talk to it at {server} "
                f"(pass --url), or stop it (kill {pid})")
    return (f"another mahavishnu process ({who}) owns the state directory {home}; wait for it to finish, "
            f"stop it (kill {pid}), or set MAHAVISHNU_HOME to another directory")


def _command_line(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            import psutil

            return " ".join(psutil.Process(pid).cmdline())[:200] or None
        except Exception:  # gone, or not allowed to look
            return None
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:200] or None


def _server_url(home: Path, pid: int) -> str | None:
    try:
        data = json.loads((home / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return str(data["url"]) if data.get("pid") == pid and isinstance(data.get("url"), str) else None
