"""Free TCP ports for test servers: the kernel picks, so parallel suites never collide on a fixed port."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (bound, read and released)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
