"""A splittable task type whose shards block on a gate file: for distribution tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pools.task_types.base import RunContext, TaskType, chunk


class GatePayload(BaseModel):
    gate: str
    items: list[int]


class GateTask(TaskType):
    name = "gate"
    description = "Wait for the gate file, then return the items doubled; fail on a negative one (tests only)."
    payload_model = GatePayload
    idempotent = True

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        if any(i < 0 for i in payload["items"]):
            raise ValueError(f"negative item in {payload['items']}")  # a shard that fails by itself
        Path(f"{payload['gate']}.started.{os.getpid()}.{payload['items'][0]}").write_text("")
        deadline = time.time() + 60
        while not Path(payload["gate"]).exists():
            if time.time() > deadline:
                raise TimeoutError("gate never opened")
            time.sleep(0.01)
        return {"doubled": [2 * i for i in payload["items"]], "pid": os.getpid()}

    def split(self, payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
        return [{"gate": payload["gate"], "items": part} for part in chunk(payload["items"], n)]

    def reduce(self, results: list[Any]) -> Any:
        return {"doubled": [x for r in results for x in r["doubled"]]}

    def summarize(self, result: Any) -> str:
        return f"{len(result['doubled'])} doubled"
