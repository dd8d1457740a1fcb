"""What a Kubernetes Job's container runs: `python -c <stdlib_runs.py + this file's source>`.

Standard library only, so a stock `python:3.13-slim` image runs the stdlib task types
(echo, shell, python); an image with this package installed (see kubernetes/Dockerfile) runs
every task type through the package itself. The task arrives as a JSON file whose path is in
MAHAVISHNU_TASK_FILE (a Secret mounted read-only: env values and argv would be rewritten by the
kubelet's `$(VAR)` expansion, and one env var over 128 KiB cannot be exec'd); a shard of an
Indexed Job reads the file of its JOB_COMPLETION_INDEX. The result leaves
as the pod log's last line (and, when it is small, as the container's termination message):

    MAHAVISHNU_RESULT {"ok": true, "result": ...}      or      {"ok": false, "error": "..."}
"""

import contextlib
import json
import os
import signal
import sys
import traceback
from typing import Any

MARKER = "MAHAVISHNU_RESULT "
TERMINATION_MESSAGE_MAX = 4096  # what the kubelet keeps of a termination message


# Imported as a module (tests, an image with the package) this finds the implementations; run
# as a Job, stdlib_runs.py's source precedes this one and has defined STDLIB_RUNS already.
with contextlib.suppress(ImportError):
    from pools.task_types.stdlib_runs import STDLIB_RUNS


def run(task: dict[str, Any]) -> Any:
    try:
        from pools.task_types import BUILTIN_TASK_TYPES, RunContext, load_ref  # an image with the package
    except ImportError:
        if task["task_type"] not in STDLIB_RUNS:
            known = ", ".join(sorted(STDLIB_RUNS))
            raise LookupError(f"task type {task['task_type']!r} needs an image with mahavishnu-pools installed "
                              f"(kubernetes/Dockerfile); this image runs only {known}") from None
        return STDLIB_RUNS[task["task_type"]](task["payload"])
    ref = task.get("type_ref") or BUILTIN_TASK_TYPES[task["task_type"]]
    return load_ref(ref)().run(task["payload"], RunContext.model_validate(task.get("context") or {}))


def main() -> None:
    # PID 1 in a container ignores SIGTERM unless it handles it: without this a deleted pod would
    # run on until SIGKILL, and exit 137 where the Job's podFailurePolicy looks for 143.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    path = os.environ["MAHAVISHNU_TASK_FILE"]  # a shard of an Indexed Job: task-{index}.json
    with open(path.replace("{index}", os.environ.get("JOB_COMPLETION_INDEX", "0")), encoding="utf-8") as file:
        task = json.load(file)
    try:
        out = {"ok": True, "result": run(task)}
    except BaseException as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
    sys.stdout.flush()
    line = MARKER + json.dumps(out, default=repr)
    print("\n" + line, flush=True)
    # A small result also goes into the pod's status (its termination message): it reaches the
    # server with the pod's end on the watch, and stays readable when the log is gone.
    if len(line.encode()) <= TERMINATION_MESSAGE_MAX and os.environ.get("MAHAVISHNU_RESULT_FILE"):
        with contextlib.suppress(OSError), open(os.environ["MAHAVISHNU_RESULT_FILE"], "w", encoding="utf-8") as f:
            f.write(line)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
