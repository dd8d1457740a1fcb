"""The program a local worker runs: `python -m pools.backends.worker_process FD OWNER_PID`.

It is started fresh (exec, never forked from the server), in its own session. On Linux it
splits in two at once, so that nothing a task starts can outlive the task or its owner:

    owner (server) ──spawns──> keeper ──fork──> worker ──runs──> task ──> its children ...
                   pdeathsig: │ SIGTERM         │ SIGKILL
                              │ subreaper       │ subreaper; after every task, every
                              │                 │ descendant still alive is killed and reaped
                              └─ when the worker exits, or the owner dies: kill and reap every
                                 descendant (orphans were adopted by it), then exit with the
                                 worker's own status

The keeper runs no task code, so it always answers a signal; the worker may be stuck in C
code holding the GIL (a long regex) and still dies the moment its keeper does. The worker
reads one job at a time from the socket, runs it, and writes back the result or the error
with its traceback. Elsewhere (no prctl) there is no keeper: a watchdog thread ends the
worker's process group when the owner is gone.
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

from pools.backends import reaping

READY = "__ready__"


def _watch_parent(parent_pid: int) -> None:
    """The fallback without a parent-death signal: poll for the owner."""
    while True:
        if os.getppid() != parent_pid:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(0.2)


def serve(conn: Connection, *, sweep_after_task: bool) -> None:
    from pools.task_types import RunContext, load_ref

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
        if sweep_after_task and not reaping.reap_finished():
            reaping.sweep()  # what the task left running ends with it


def keep(worker_pid: int) -> int:
    """The keeper's life: wait for the worker, killing it if the owner dies (SIGTERM, the
    parent-death signal, or the owner's own request). Then kill and reap everything below,
    and return the worker's wait status."""
    def end_worker(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker_pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, end_worker)
    status = 0
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:  # pragma: no cover - nothing left to wait for
            break
        if pid == worker_pid:
            status = wait_status
            break
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the sweep whatever comes
    reaping.sweep()
    return status


def exit_like(status: int) -> None:
    """Leave with the worker's own exit status, so its owner reports how the worker ended."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # pragma: no cover - a signal that does not terminate
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main() -> None:
    fd, owner_pid = int(sys.argv[1]), int(sys.argv[2])
    # Ctrl-C in a terminal reaches the whole foreground group; the owner decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kernel = reaping.die_with_parent(signal.SIGTERM) and reaping.become_subreaper()
    if os.getppid() != owner_pid:
        os._exit(1)  # the owner died before it could be watched
    if kernel:
        keeper_pid = os.getpid()
        worker_pid = os.fork()
        if worker_pid:
            os.close(fd)  # the worker's socket: its EOF tells the owner the worker is gone
            exit_like(keep(worker_pid))
        if not reaping.die_with_parent(signal.SIGKILL) or os.getppid() != keeper_pid:
            os._exit(1)
        reaping.become_subreaper()
    else:
        threading.Thread(target=_watch_parent, args=(owner_pid,), daemon=True).start()
    # The owner going away mid-exchange leaves nothing to report to and nothing to clean up.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(Connection(fd), sweep_after_task=kernel)
    if kernel:
        reaping.sweep()


if __name__ == "__main__":
    main()
