"""A user-defined task type for the seed's workflow example (published through task_type_refs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pools.task_types.base import RunContext, TaskType


class StepPayload(BaseModel):
    step: str


class WorkflowStep(TaskType):
    name = "workflow_step"
    description = "One step of an application's workflow (tests only)."
    payload_model = StepPayload
    idempotent = True

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        return {"step": payload["step"], "done": True}

    def summarize(self, result: Any) -> str:
        return f"workflow step done: {result['step']}"
