"""The task-type plug-in interface.

A task type is a payload schema plus four functions. `run` executes in a worker
process (or a peer, or a pod); `split`, `reduce` and `summarize` run in the server.
Third-party types register under the entry-point group `mahavishnu.task_types`:

    [project.entry-points."mahavishnu.task_types"]
    resize = "my_package.tasks:ResizeTask"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pools import jsontext
from pools.errors import InvalidInput, describe_validation_error
from pools.file_roots import FileRoots

if TYPE_CHECKING:
    from pools.task_types import TaskTypeRegistry


class RunContext(BaseModel):
    """What a worker knows about where it runs, sent with every task."""

    model_config = ConfigDict(extra="allow")

    worker_type: str = "terminal-qwen"
    prompt_commands: dict[str, list[str]] = {}
    file_roots: dict[str, Any] | None = None  # FileRoots.to_context(): where a task may read files
    max_result_bytes: int | None = None
    worker_memory_bytes: int | None = None


class TaskType:
    name: ClassVar[str]
    description: ClassVar[str]
    payload_model: ClassVar[type[BaseModel]]
    # Runs arbitrary code or commands: off until the operator enables it.
    executes_code: ClassVar[bool] = False
    # Safe to run twice: a task orphaned by a dead server is re-queued rather than failed.
    idempotent: ClassVar[bool] = False
    registry: TaskTypeRegistry | None = None  # set when the server's registry loads it

    def roots(self, context: RunContext | None = None) -> FileRoots:
        """Where this task may read files: the roots sent with the task, else the server's (in split),
        else the working directory. Read every path through it (pools.file_roots)."""
        if context is not None and context.file_roots is not None:
            return FileRoots.from_context(context.file_roots)
        if self.registry is not None and self.registry.file_roots is not None:
            server = self.registry.file_roots
            return FileRoots(server.roots, server.client_roots, server.caps)  # a fresh byte count
        return FileRoots.from_context(None)

    @classmethod
    def validate_payload(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise a payload; errors name the field as `payload.<field>`."""
        try:
            model = cls.payload_model.model_validate(payload)
        except ValidationError as exc:
            message, field = describe_validation_error(exc, prefix="payload")
            raise InvalidInput(f"bad payload for task type {cls.name!r}: {message}", field=field) from exc
        # Free-form fields (echo's items) as validated, not walked again for a JSON-mode copy:
        # a tool's arguments are JSON already (pools.jsontext.dump).
        return jsontext.dump(model, exclude_none=True)

    def file_inputs(self, payload: dict[str, Any]) -> list[tuple[str, str]]:
        """(field, path) for every path in the payload that `run` reads on the worker's disk. The
        server checks them against its file roots before a local pool takes the task."""
        return []

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        raise NotImplementedError

    def split(self, payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """Cut a payload into at most n shards. The default cannot split: one shard."""
        return [payload]

    def reduce(self, results: list[Any]) -> Any:
        """Merge shard results into one. The default returns them as a list."""
        return results

    def summarize(self, result: Any) -> str:
        """One line for people, e.g. 'Analysis complete: 15 issues found'."""
        text = repr(result)
        return text if len(text) <= 120 else text[:117] + "..."


def chunk(items: list[Any], n: int) -> list[list[Any]]:
    """Split items into at most n contiguous, nearly equal, non-empty chunks."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out: list[list[Any]] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return [c for c in out if c]
