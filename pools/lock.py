"""One owner per state directory: an advisory lock the OS releases when its holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from pools.errors import StoreBusy


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.path = home / "owner.lock"
        self._fd: int | None = None

    def acquire(self, wait: float = 10.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise StoreBusy(
                        f"another mahavishnu process (pid {holder}) owns the state directory {self.path.parent}; "
                        "talk to it (its URL is in server.json there, or pass --url) or stop it first"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
