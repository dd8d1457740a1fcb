"""The runtime file a running server leaves in its state directory, so that the CLI
finds it: `$MAHAVISHNU_HOME/server.json` = {url, token, pid}. Imports nothing heavy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILENAME = "server.json"


def write(home: Path, url: str, token: str | None) -> Path:
    path = home / FILENAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold a token
    os.fchmod(fd, 0o600)  # a leftover .tmp of wider mode is tightened too
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, fh)
    tmp.replace(path)
    return path


def remove(home: Path) -> None:
    path = home / FILENAME
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def read(home: Path) -> dict[str, Any] | None:
    """The live server's entry, or None (a stale file from a dead server is ignored)."""
    try:
        data = json.loads((home / FILENAME).read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return data if isinstance(data.get("url"), str) else None
