"""`prompt`: run the pool's AI coding CLI headless (qwen, claude, ...) on one prompt."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pools.task_types.base import RunContext, TaskType


class PromptPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="What to ask the AI CLI.")
    cwd: str | None = Field(default=None, description="Directory the CLI works in.")


class PromptTask(TaskType):
    name = "prompt"
    description = (
        "Run the pool's AI coding CLI (its worker type: terminal-qwen, terminal-claude, ...) headless on "
        "{'prompt': text, 'cwd'?}. The command per worker type comes from settings.yaml prompt_commands. "
        "The CLI can change files, so the type is off until the operator enables it."
    )
    payload_model = PromptPayload
    executes_code = True

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        template = context.prompt_commands.get(context.worker_type)
        if not template:
            known = ", ".join(sorted(context.prompt_commands)) or "none"
            raise LookupError(
                f"no command configured for worker type {context.worker_type!r} (configured: {known}); "
                "add it under prompt_commands in settings.yaml"
            )
        argv = [part.replace("{prompt}", payload["prompt"]) for part in template]
        if shutil.which(argv[0]) is None:
            raise FileNotFoundError(
                f"worker type {context.worker_type!r} runs {argv[0]!r}, which is not installed on this worker "
                f"(not on PATH). Install it, or register the pool with --worker-type naming an installed CLI."
            )
        proc = subprocess.run(argv, cwd=payload.get("cwd"), capture_output=True, text=True, errors="replace",
                              env=dict(os.environ), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with code {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return {"output": proc.stdout, "exit_code": proc.returncode}

    def summarize(self, result: Any) -> str:
        text = (result.get("output") or "").strip() if isinstance(result, dict) else str(result)
        return text.splitlines()[0][:120] if text else "(no output)"
