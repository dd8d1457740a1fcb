"""The run() of the task types that need only the standard library: echo, shell and python.

Standard library only, on purpose: the task types call these, and the Kubernetes Job runner
ships this very source inside each Job (`python -c`), so a stock python image runs them too.
One implementation, wherever the task runs.
"""

import importlib
import json
import os
import subprocess
from typing import Any

MAX_OUTPUT = 1_000_000  # bytes of stdout/stderr kept; the rest is cut and flagged


def run_echo(payload: dict[str, Any]) -> Any:
    items = payload.get("items")
    return {"echo": payload, "count": len(items) if items is not None else 1}


def run_shell(payload: dict[str, Any]) -> Any:
    env = {**os.environ, **(payload.get("env") or {})}
    proc = subprocess.run(payload["argv"], cwd=payload.get("cwd"), env=env, input=payload.get("stdin"),
                          capture_output=True, text=True, errors="replace", check=False)
    return {"exit_code": proc.returncode, "stdout": proc.stdout[:MAX_OUTPUT], "stderr": proc.stderr[:MAX_OUTPUT],
            "truncated": len(proc.stdout) > MAX_OUTPUT or len(proc.stderr) > MAX_OUTPUT}


def run_python(payload: dict[str, Any]) -> Any:
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


STDLIB_RUNS = {"echo": run_echo, "shell": run_shell, "python": run_python}
