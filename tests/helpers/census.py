"""Orphan and zombie census: which processes still say they belong to an owner of pools."""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from pools.backends.local import OWNER_ENV


def ours(owner_pid: int) -> dict[int, str]:
    """Every live process started for pools owned by `owner_pid` (workers, keepers, and whatever
    tasks started: they inherit the marker in their environment), with its command line."""
    found: dict[int, str] = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(OWNER_ENV) == str(owner_pid):
                found[proc.pid] = " ".join(proc.cmdline())[:120]
        except psutil.Error:
            continue
    return found


def orphans(owner_pid: int, live_workers: Iterable[int] = ()) -> dict[int, str]:
    """Ours, less the live workers and their keepers: what should not exist."""
    allowed = set(live_workers)
    for pid in live_workers:
        try:
            allowed.add(psutil.Process(pid).ppid())
        except psutil.Error:
            continue
    return {pid: cmd for pid, cmd in ours(owner_pid).items() if pid not in allowed}


def zombies(parent_pid: int) -> list[int]:
    try:
        children = psutil.Process(parent_pid).children()
    except psutil.Error:
        return []
    out = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.Error:
            continue
    return out
