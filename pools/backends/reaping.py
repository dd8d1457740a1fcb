"""What the kernel offers so that no process a task starts outlives it (Linux).

- A *child subreaper* (prctl PR_SET_CHILD_SUBREAPER) adopts every orphan below it: a task's
  child that double-forks or calls setsid is reparented to the subreaper instead of init, so
  it stays findable (it is a child) and killable.
- A *parent-death signal* (prctl PR_SET_PDEATHSIG) is sent by the kernel when the parent
  dies, even when the child is stuck in C code holding the GIL, where no watchdog thread of
  its own can run.

Standard library only and cheap to import: the worker program imports it before anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

LINUX = sys.platform.startswith("linux")


def _prctl(option: int, value: int) -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(option, value, 0, 0, 0) == 0)


def become_subreaper() -> bool:
    return LINUX and _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int) -> bool:
    """Have the kernel send `sig` when the parent exits. The parent may have died before the
    call, so the caller checks os.getppid() afterwards."""
    return LINUX and _prctl(PR_SET_PDEATHSIG, sig)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children first found, then theirs)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (in parentheses) may hold spaces; the fields after it are fixed.
        ppid = int(stat[stat.rindex(b")") + 2:].split(b" ", 2)[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def reap_finished() -> bool:
    """Reap children that have exited; True when none is left at all (one syscall when none ever was)."""
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return False
    except ChildProcessError:
        return True


def sweep() -> int:
    """Kill every descendant of this process and reap them all; returns how many were killed.
    As a subreaper this process adopts each orphan the kills make, so the loop ends only when
    nothing below it is left."""
    killed: set[int] = set()
    while not reap_finished():
        for pid in descendants(os.getpid()):
            killed.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)  # something was just killed: it exits, or one of its orphans arrives
        except ChildProcessError:
            break
    return len(killed)
