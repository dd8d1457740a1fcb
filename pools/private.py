"""Private state: the state directory is 0700 and every file the server keeps in it 0600,
whatever the umask (task payloads and results are as private as the code they came from).

A directory or file found with wider modes is tightened, and the caller logs that it was.
SQLite creates `-wal` and `-shm` with the database file's own mode, so creating the database
0600 first keeps its companions private too; they are tightened as well when they exist.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("mahavishnu.pools")

DIR_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & ~mode:
        os.chmod(path, mode)
        log.warning("%s had mode %o; tightened to %o (it holds private task data)", path, current, mode)


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700, or tighten it to 0700 when it exists wider."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # mkdir's mode is masked by the umask...
    _tighten(path, DIR_MODE)  # ...so set it outright
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty 0600 unless it exists; tighten it to 0600 either way."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    os.close(fd)
    _tighten(path, FILE_MODE)
    return path


def private_database(path: Path) -> Path:
    """The SQLite database and its -wal/-shm companions, 0600 before SQLite opens them."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _tighten(companion, FILE_MODE)
    return path
