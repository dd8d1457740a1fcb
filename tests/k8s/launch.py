"""Start one container process for the node agent, the way a container runtime does.

The agent runs `python launch.py` with two inherited descriptors: `--spec FD` carries the
container as JSON (argv, env, working directory, bind mounts), and `--errors FD` is
close-on-exec. This process applies the mounts in a private mount namespace and replaces
itself with the container's command (so the container keeps this pid). A successful exec
closes the error descriptor with nothing written; a failed one (command not found, E2BIG, a
mount that cannot be made) writes the reason there and exits 128, which the agent reports as
the kubelet does: `terminated` with reason StartError.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x20, 0x1000, 0x4000, 0x40000


def mount(libc: ctypes.CDLL, source: str | None, target: str, flags: int) -> None:
    if libc.mount(source and source.encode(), target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or ''} on {target}: {os.strerror(err)}")


def apply_mounts(mounts: list[dict[str, object]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"a private mount namespace for the volumes: {os.strerror(err)}")
    mount(libc, None, "/", MS_REC | MS_PRIVATE)  # our binds never leak back to the host
    for m in mounts:
        source, target = str(m["source"]), str(m["target"])
        mount(libc, source, target, MS_BIND | MS_REC)
        if m.get("read_only"):
            mount(libc, None, target, MS_REMOUNT | MS_BIND | MS_RDONLY)


def exec_message(argv0: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and "/" not in argv0:
        reason = "executable file not found in $PATH"
    else:
        reason = os.strerror(exc.errno or 0).lower() if exc.errno else str(exc)
    return f'exec: "{argv0}": {reason}'


def main() -> None:
    spec_fd, error_fd = int(sys.argv[2]), int(sys.argv[4])
    with os.fdopen(spec_fd, "rb") as f:
        spec = json.load(f)
    os.set_inheritable(error_fd, False)
    argv: list[str] = spec["argv"]
    try:
        if spec["mounts"]:
            apply_mounts(spec["mounts"])
        os.chdir(spec["cwd"])
    except OSError as exc:
        os.write(error_fd, f"unable to start container process: {exc.strerror or exc}".encode())
        os._exit(128)
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        os.write(error_fd, f"unable to start container process: {exec_message(argv[0], exc)}".encode())
        os._exit(128)


if __name__ == "__main__":
    main()
