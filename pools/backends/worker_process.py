"""The program a local worker runs: `python -m pools.backends.worker_process FD PARENT_PID`.

It is started fresh (exec, never forked from the server), in its own session so that
killing its process group also ends any command a task started. It reads one job at a
time from a socket, runs it, and writes back the result or the error with its traceback.
A watchdog thread ends the whole group as soon as the parent is gone, so no worker
outlives its owner, even when the owner was killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

READY = "__ready__"


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(0.2)


def serve(conn: Connection, parent_pid: int) -> None:
    from pools.task_types import RunContext, load_ref

    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    conn.send_bytes(pickle.dumps((READY, os.getpid())))
    instances: dict[str, Any] = {}
    contexts: dict[bytes, RunContext] = {}
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        task_id, type_ref, payload, context_blob = pickle.loads(message)
        if task_id is None:
            return
        try:
            task_type = instances.get(type_ref)
            if task_type is None:
                task_type = instances[type_ref] = load_ref(type_ref)()
            context = contexts.get(context_blob)
            if context is None:
                context = contexts[context_blob] = RunContext.model_validate(pickle.loads(context_blob))
            reply: tuple[Any, ...] = (task_id, True, task_type.run(payload, context), None)
        except BaseException as exc:  # the task's failure, reported, never the worker's end
            reply = (task_id, False, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        try:
            data = pickle.dumps(reply)
        except Exception as exc:
            data = pickle.dumps((task_id, False, None, f"result could not be sent back: {exc}"))
        conn.send_bytes(data)


def main() -> None:
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    # Ctrl-C in a terminal reaches the whole foreground group; the owner decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The owner going away mid-exchange leaves nothing to report to and nothing to clean up.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(Connection(fd), parent_pid)


if __name__ == "__main__":
    main()
