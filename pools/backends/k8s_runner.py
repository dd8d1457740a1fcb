"""What a Kubernetes Job's container runs: `python -c <this file's source>`.

Standard library only, so a stock `python:3.13-slim` image runs the stdlib task types
(echo, shell, python); an image with this package installed (see kubernetes/Dockerfile) runs
every task type through the package itself. The task arrives in the environment:
MAHAVISHNU_TASK (one task as JSON), or MAHAVISHNU_TASKS (a list) with JOB_COMPLETION_INDEX for
the shards of an Indexed Job. The result leaves as the pod log's last line:

    MAHAVISHNU_RESULT {"ok": true, "result": ...}      or      {"ok": false, "error": "..."}
"""

import importlib
import json
import os
import subprocess
import sys
import traceback
from typing import Any

MARKER = "MAHAVISHNU_RESULT "


def _echo(payload: dict[str, Any]) -> Any:
    items = payload.get("items")
    return {"echo": payload, "count": len(items) if items is not None else 1}


def _shell(payload: dict[str, Any]) -> Any:
    env = dict(os.environ)
    env.update(payload.get("env") or {})
    proc = subprocess.run(payload["argv"], cwd=payload.get("cwd"), env=env, input=payload.get("stdin"),
                          capture_output=True, text=True, errors="replace", check=False)
    limit = 1000000
    return {"exit_code": proc.returncode, "stdout": proc.stdout[:limit], "stderr": proc.stderr[:limit],
            "truncated": len(proc.stdout) > limit or len(proc.stderr) > limit}


def _python(payload: dict[str, Any]) -> Any:
    module_name, _, attr = payload["target"].partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    value = obj(*payload.get("args", []), **payload.get("kwargs", {}))
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"value": repr(value), "repr": True}
    return {"value": value}


STDLIB_TYPES: dict[str, Any] = {"echo": _echo, "shell": _shell, "python": _python}


def run(task: dict[str, Any]) -> Any:
    try:
        from pools.task_types import BUILTIN_TASK_TYPES, RunContext, load_ref  # an image with the package
    except ImportError:
        if task["task_type"] not in STDLIB_TYPES:
            known = ", ".join(sorted(STDLIB_TYPES))
            raise LookupError(f"task type {task['task_type']!r} needs an image with mahavishnu-pools installed "
                              f"(kubernetes/Dockerfile); this image runs only {known}") from None
        return STDLIB_TYPES[task["task_type"]](task["payload"])
    ref = task.get("type_ref") or BUILTIN_TASK_TYPES[task["task_type"]]
    return load_ref(ref)().run(task["payload"], RunContext.model_validate(task.get("context") or {}))


def main() -> None:
    if "MAHAVISHNU_TASKS" in os.environ:
        task = json.loads(os.environ["MAHAVISHNU_TASKS"])[int(os.environ["JOB_COMPLETION_INDEX"])]
    else:
        task = json.loads(os.environ["MAHAVISHNU_TASK"])
    try:
        out = {"ok": True, "result": run(task)}
    except BaseException as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
    sys.stdout.flush()
    print("\n" + MARKER + json.dumps(out, default=repr), flush=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
