"""Start `mahavishnu serve` as a real subprocess on an ephemeral loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_")}
    env.update({"MAHAVISHNU_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"})
    env.update(extra)
    return env


def write_settings(home: Path, enabled: tuple[str, ...] = ("analyze", "echo", "python", "shell"),
                   default_pool: bool = True, extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.yaml").write_text(
        f"enabled_task_types: [{', '.join(enabled)}]\ndefault_pool: {str(default_pool).lower()}\n{extra}")


def start_server(home: Path, *args: str, command: tuple[str, ...] = ("serve",),
                 **env: str) -> tuple[str, subprocess.Popen[str]]:
    """Start a server and return (url, process) once it serves; the caller stops it."""
    port = [] if "--port" in args else ["--port", "0"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *command, *port,
                             "--log-level", "warning", *args],
                            cwd=home.parent, env=cli_env(home, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True).start()
    url = None
    for line in proc.stdout:  # ends at EOF if the server dies first
        match = re.search(r"serving .* at (\S+) \(state", line)
        if match:
            url = match.group(1)
            break
    if url is None:
        proc.wait(10)
        raise AssertionError(f"server did not start (exit {proc.returncode}): {''.join(stderr)[-3000:]}")
    # The rest of stdout is kept (a test reads what a server printed, e.g. its console trace export).
    rest: list[str] = []
    threading.Thread(target=lambda: rest.extend(proc.stdout or []), daemon=True).start()
    proc.printed = rest  # type: ignore[attr-defined]
    return url, proc


@contextmanager
def running_server(home: Path, *args: str, command: tuple[str, ...] = ("serve",),
                   **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Yields (url, process). Stops the server with SIGTERM and checks it exits.
    `command=("peer", "serve")` starts a Session-Buddy-compatible peer instead."""
    url, proc = start_server(home, *args, command=command, **env)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("server ignored SIGTERM") from None


def run_cli(home: Path, *args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    # The test's directory is the working directory, so it is the file root (as a project would be).
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=home.parent, env=cli_env(home, **env),
                          capture_output=True, text=True, timeout=timeout)
