"""`python`: call `module:function(*args, **kwargs)` in a worker. Off by default."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pools.task_types.base import RunContext, TaskType
from pools.task_types.stdlib_runs import run_python


class PythonPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description="'package.module:function'.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PythonCallTask(TaskType):
    name = "python"
    description = (
        "Call a Python function importable on the worker: {'target': 'module:function', 'args': [], "
        "'kwargs': {}}. The return value must be JSON-serialisable (else its repr is returned). "
        "Executes code, so it is off until the operator enables it."
    )
    payload_model = PythonPayload
    executes_code = True

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        return run_python(payload)

    def summarize(self, result: Any) -> str:
        text = repr(result.get("value")) if isinstance(result, dict) else repr(result)
        return f"Returned {text[:100]}"
