"""Length-prefixed pickles over a stream socket, read in bulk.

One recv() takes every message that has arrived (several, once jobs are pipelined), where
multiprocessing.Connection pays two reads and a selector per message. Sends are one
sendall() of header and body. Standard library only: the worker imports it first.
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections import deque
from typing import Any

HEADER = struct.Struct("!Q")
CHUNK = 1 << 16


def frame(data: bytes) -> bytes:
    return HEADER.pack(len(data)) + data


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self.messages: deque[Any] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Any) -> None:
        self.sock.sendall(frame(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))

    def pull(self, block: bool) -> None:
        """Move what has arrived into `messages`; with `block`, wait until at least one is there.
        Raises EOFError once the other end has closed (what came before stays in `messages`)."""
        flags = 0 if block else socket.MSG_DONTWAIT
        while True:
            try:
                data = self.sock.recv(CHUNK, flags)
            except BlockingIOError:
                return
            if not data:
                raise EOFError
            self._buf += data
            self._parse()
            if self.messages and len(data) < CHUNK:
                return  # took everything there was
            if self.messages or not block:
                flags = socket.MSG_DONTWAIT

    def _parse(self) -> None:
        buf, start, size = self._buf, 0, len(self._buf)
        while size - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, start)
            end = start + HEADER.size + length
            if end > size:
                break
            self.messages.append(pickle.loads(buf[start + HEADER.size:end]))
            start = end
        if start:
            del buf[:start]

    def close(self) -> None:
        self.sock.close()
