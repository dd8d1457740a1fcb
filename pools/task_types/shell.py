"""`shell`: run a command as an argv list (never a shell string). Off by default."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pools.task_types.base import RunContext, TaskType
from pools.task_types.stdlib_runs import run_shell


class ShellPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, description="Program and arguments, e.g. ['ls', '-l'].")
    cwd: str | None = Field(default=None, description="Working directory.")
    env: dict[str, str] | None = Field(default=None, description="Variables added to the worker's environment.")
    stdin: str | None = Field(default=None, description="Text fed to the program's standard input.")


class ShellTask(TaskType):
    name = "shell"
    description = (
        "Run a program: {'argv': [...], 'cwd'?, 'env'?, 'stdin'?}. Returns exit_code, stdout, stderr. "
        "Executes commands, so it is off until the operator enables it."
    )
    payload_model = ShellPayload
    executes_code = True

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        return run_shell(payload)

    def summarize(self, result: Any) -> str:
        if not isinstance(result, dict):
            return "Command finished"
        first = (result.get("stdout") or result.get("stderr") or "").strip().splitlines()
        tail = f": {first[0][:80]}" if first else ""
        return f"Exit code {result.get('exit_code')}{tail}"
