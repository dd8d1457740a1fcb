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
runs the jobs the owner sends, in order, and writes back each result or error with its
traceback (the protocol is below). Elsewhere (no prctl) there is no keeper: a watchdog thread ends the
worker's process group when the owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from pools.backends import reaping
from pools.backends.framing import Channel

# The wire protocol (pickled tuples over the socket):
#   owner -> worker   (JOB, task_id, type_ref, payload, context_blob, announce) | (CANCEL, task_id) | (STOP,)
#   worker -> owner   (READY, pid) | (STARTED, task_id) | (SKIPPED, task_id)
#                     | (DONE, task_id, ok, result, error, next_task_id)
# Jobs run in the order sent. The owner may send the next job before the current one ends
# (pipelining). Before starting a job the worker reads everything already sent, so a CANCEL
# of a job it holds but has not started removes it (SKIPPED). A job's start is announced,
# either alone (STARTED, unless the owner said not to: it counts a job sent to an idle worker
# as started) or with the previous job's outcome (DONE ... next_task_id), so the
# owner always knows which job runs: the one to kill on cancel or timeout, the one a crash
# failed; the others never started and go back to its queue. A CANCEL sent while a task runs
# comes with SIGUSR1, so it is answered at once.
READY, JOB, CANCEL, STOP, STARTED, SKIPPED, DONE = "ready", "job", "cancel", "stop", "started", "skipped", "done"


def _watch_parent(parent_pid: int) -> None:
    """The fallback without a parent-death signal: poll for the owner."""
    while True:
        if os.getppid() != parent_pid:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(0.2)


def limit_memory(limit: int | None) -> None:
    """The operator's worker_memory_bytes as this process's address-space limit (RLIMIT_AS): a task
    that grows without bound gets MemoryError instead of taking the machine."""
    import resource

    if not limit:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))  # the soft limit: a task's commands inherit it


def check_result_size(result: Any, limit: int | None) -> None:
    """Refuse a result over the operator's max_result_bytes (as JSON: the compact form the store
    keeps, measured by pydantic-core, several times faster than json) before it is sent back."""
    if not limit:
        return
    from pools import jsontext  # here: the keeper process, forked before any task, never loads pydantic

    size = jsontext.size(result)
    if size > limit:
        raise ValueError(f"the task's result is {size} bytes as JSON, over the limit of {limit} (setting "
                         "max_result_bytes); return less, or write it to a file and return the path")


def batch_policy() -> None:
    """Run as SCHED_BATCH (Linux): the same CPU share, but a worker woken by a job does not preempt
    the server that just sent it, which goes on to send the next worker its job and then sleeps.
    Otherwise, on a busy 2-core machine, each send could hand the server's CPU to that worker
    until its task ended, so the workers of a distribution ran one after the other (about 1 ms
    of a 20,000-item map_reduce call of 18 ms). Tasks are batch work; what they start inherits it."""
    with contextlib.suppress(AttributeError, OSError):  # not on this platform: the default policy
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def serve(conn: Channel, *, sweep_after_task: bool) -> None:
    from pools.task_types import RunContext, load_ref

    instances: dict[str, Any] = {}
    contexts: dict[bytes, RunContext] = {}
    pending: deque[tuple[Any, ...]] = deque()
    stopping = False
    in_task = False
    outcome: tuple[Any, ...] | None = None  # the last job's, sent with the next job's start

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # an outcome that cannot travel is reported as the task's failure
            conn.send((DONE, message[1], False, None, f"result could not be sent back: {exc}", message[-1]))

    def take_all(block: bool) -> None:
        nonlocal stopping
        conn.pull(block)
        while conn.messages:
            message = conn.messages.popleft()
            if message[0] == JOB:
                pending.append(message)
            elif message[0] == CANCEL:
                for job in pending:
                    if job[1] == message[1]:
                        pending.remove(job)
                        send((SKIPPED, message[1]))
                        break
            else:
                stopping = True

    def run(job: tuple[Any, ...]) -> tuple[Any, ...]:
        _, task_id, type_ref, payload, context_blob, _announce = job
        try:
            task_type = instances.get(type_ref)
            if task_type is None:
                task_type = instances[type_ref] = load_ref(type_ref)()
            context = contexts.get(context_blob)
            if context is None:
                context = contexts[context_blob] = RunContext.model_validate(pickle.loads(context_blob))
                limit_memory(context.worker_memory_bytes)
            result = task_type.run(payload, context)
            check_result_size(result, context.max_result_bytes)
            return (DONE, task_id, True, result, None)
        except BaseException as exc:  # the task's failure, reported, never the worker's end
            return (DONE, task_id, False, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    def read_mail(signum: int, frame: object) -> None:
        """SIGUSR1 while a task runs: the owner asks back a job held behind it (a cancel, or for an
        idle worker); answer now rather than when the task ends. Between tasks the loop reads."""
        if in_task:
            take_all(block=False)

    signal.signal(signal.SIGUSR1, read_mail)
    conn.send((READY, os.getpid()))
    while True:
        try:
            take_all(block=False)  # everything already sent: new jobs, and cancels of held ones
            if not pending:
                if outcome is not None:
                    send((*outcome, None))
                    outcome = None
                if stopping:
                    return
                take_all(block=True)
                continue
        except EOFError:  # the owner is gone, or stopped us: nothing is waiting for more
            return
        job = pending.popleft()
        if outcome is not None:
            send((*outcome, job[1]))
        elif job[5]:  # (a job handed to an idle worker is counted as started when sent)
            send((STARTED, job[1]))
        in_task = True
        outcome = run(job)
        in_task = False
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
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP keep their default anyway
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # pragma: no cover - a signal that does not terminate
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main() -> None:
    fd, owner_pid = int(sys.argv[1]), int(sys.argv[2])
    batch_policy()
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
        serve(Channel(socket.socket(fileno=fd)), sweep_after_task=kernel)
    if kernel:
        reaping.sweep()


if __name__ == "__main__":
    main()
