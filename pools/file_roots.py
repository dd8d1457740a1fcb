"""File roots: every path a tool or task reads resolves inside the operator's roots.

    path ─> absolute (relative to the first root) ─> realpath (symlinks followed)
         ─> inside an operator root, and inside a client root when the client declared any?
         ─> a regular file or a directory (devices, FIFOs, sockets refused)
         ─> read with caps: bytes per file, files per task, bytes per task

Roots are the server's working directory plus the `file_roots` setting; an MCP client over stdio
that declares roots narrows them to paths inside both. Errors name the roots, never the content
of a file. Reads open with O_NONBLOCK and check the opened descriptor, so a FIFO swapped in after
the check cannot block a worker, and a file that grows cannot be read past its cap.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SKIP_DIRS = {".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".tox", ".mypy_cache", "build", "dist"}


class OutsideRoots(PermissionError):
    """A path outside the roots, or not a regular file or directory. A PermissionError, so a task
    that raises it fails with its message; the server turns it into InvalidInput where it checks."""


class OverCap(ValueError):
    """A per-task file cap was reached; the message names the cap and its setting."""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass
class FileCaps:
    max_files: int = 10_000
    max_file_bytes: int = 4 << 20
    max_total_bytes: int = 256 << 20


@dataclass
class FileRoots:
    roots: list[str]
    client_roots: list[str] | None = None  # declared by an MCP client: paths must be inside these too
    caps: FileCaps = field(default_factory=FileCaps)
    files_read: int = 0
    bytes_read: int = 0

    @classmethod
    def from_context(cls, data: dict[str, Any] | None) -> FileRoots:
        """From a task's RunContext (`file_roots`); without one, the worker's working directory."""
        data = data or {}
        caps = FileCaps(**(data.get("caps") or {}))
        roots = [os.path.realpath(r) for r in (data.get("roots") or [os.getcwd()])]
        client = data.get("client_roots")
        return cls(roots, [os.path.realpath(r) for r in client] if client is not None else None, caps)

    def to_context(self) -> dict[str, Any]:
        return {"roots": self.roots, "client_roots": self.client_roots,
                "caps": {"max_files": self.caps.max_files, "max_file_bytes": self.caps.max_file_bytes,
                         "max_total_bytes": self.caps.max_total_bytes}}

    def describe(self) -> str:
        text = ", ".join(self.roots)
        if self.client_roots is not None:
            text += f" (and the client's roots: {', '.join(self.client_roots) or 'none'})"
        return text

    def _allowed(self, real: str) -> bool:
        if not any(_inside(real, r) for r in self.roots):
            return False
        return self.client_roots is None or any(_inside(real, r) for r in self.client_roots)

    def resolve(self, raw: str, *, what: str = "path") -> Path:
        """The real path of `raw` when it is inside the roots and a regular file or directory."""
        if "\x00" in raw:
            raise OutsideRoots(f"{what} contains a NUL character")
        # Relative to the first root (the server's working directory) on the server and its workers alike.
        real = os.path.realpath(os.path.join(self.roots[0], os.path.expanduser(raw)))
        if not self._allowed(real):
            raise OutsideRoots(f"{what} {raw!r} is outside the allowed file roots: {self.describe()}; the operator "
                               "adds roots with file_roots in settings.yaml")
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(2, f"no such file or directory: {raw!r} (roots: {self.describe()})", raw) from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise OutsideRoots(f"{what} {raw!r} is not a regular file or directory (devices, FIFOs and sockets "
                               f"are refused; roots: {self.describe()})")
        return Path(real)

    def expand(self, paths: Iterable[str], suffix: str = ".py", *, what: str = "path") -> list[str]:
        """Files as given, directories walked for `suffix` files (skipping VCS, venv and cache dirs).
        Stops with OverCap past max_files. Symlinks inside are resolved and checked like the rest."""
        out: list[str] = []

        def add(path: str) -> None:
            out.append(path)
            if len(out) > self.caps.max_files:
                raise OverCap(f"more than {self.caps.max_files} files to read in one task (setting "
                              "max_files_per_task); give fewer files or split the work")

        for raw in paths:
            path = self.resolve(raw, what=what)
            if not path.is_dir():
                add(str(path))
                continue
            for file in self._walk(path, suffix, what):
                add(file)
        return out

    def _walk(self, top: Path, suffix: str, what: str) -> Iterator[str]:
        visited = 0
        for root, dirs, names in os.walk(top):  # followlinks=False: a symlinked dir is not entered
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            visited += len(dirs) + len(names)
            if visited > self.caps.max_files * 20:  # a huge tree with few matches still ends
                raise OverCap(f"directory {top} has more than {self.caps.max_files * 20} entries to look "
                              "through (20 x setting max_files_per_task); point at a smaller directory")
            for name in sorted(names):
                if not name.endswith(suffix):
                    continue
                full = os.path.join(root, name)
                try:
                    yield str(self.resolve(full, what=what))
                except OutsideRoots:
                    continue  # a symlink out of the roots inside a walked tree: skipped, never read
                except FileNotFoundError:
                    continue  # a dangling symlink

    def read_text(self, path: str) -> str:
        """A file's text, within the per-file and per-task byte caps. `path` must come from
        resolve/expand; it is re-checked on the opened descriptor."""
        real = os.path.realpath(path)
        if not self._allowed(real):
            raise OutsideRoots(f"{path!r} is outside the allowed file roots: {self.describe()}")
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutsideRoots(f"{path!r} is not a regular file (roots: {self.describe()})")
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.caps.max_file_bytes:
                    raise OverCap(f"{path} is larger than {self.caps.max_file_bytes} bytes (setting "
                                  "max_file_bytes)")
                chunks.append(chunk)
        finally:
            os.close(fd)
        self.files_read += 1
        self.bytes_read += size
        if self.bytes_read > self.caps.max_total_bytes:
            raise OverCap(f"the task read more than {self.caps.max_total_bytes} bytes (setting "
                          "max_read_bytes_per_task); give fewer files")
        return b"".join(chunks).decode("utf-8", errors="replace")
