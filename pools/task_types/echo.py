"""`echo`: returns its payload. Cheap enough to measure dispatch overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pools.task_types.base import RunContext, TaskType, chunk
from pools.task_types.stdlib_runs import run_echo


class EchoPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: list[Any] | None = Field(default=None, description="Items to echo; distribution splits these.")


class EchoTask(TaskType):
    name = "echo"
    description = "Return the payload unchanged (with `count` of items). For testing and overhead benchmarks."
    payload_model = EchoPayload
    idempotent = True

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        return run_echo(payload)

    def split(self, payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
        items = payload.get("items")
        if not items:
            return [payload]
        return [{**payload, "items": part} for part in chunk(items, n)]

    def reduce(self, results: list[Any]) -> Any:
        items: list[Any] = []
        for r in results:
            items.extend(r.get("echo", {}).get("items") or [])
        return {"echo": {"items": items}, "count": sum(int(r.get("count", 0)) for r in results)}

    def summarize(self, result: Any) -> str:
        return f"Echoed {result.get('count', 0)} item(s)" if isinstance(result, dict) else "Echoed"
