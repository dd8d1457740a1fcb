"""Task-type registry: built-ins plus the entry-point group `mahavishnu.task_types`."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from pools.errors import PoolError, TaskTypeDisabled, UnknownTaskType
from pools.file_roots import FileRoots
from pools.task_types.base import RunContext, TaskType, chunk

ENTRY_POINT_GROUP = "mahavishnu.task_types"

BUILTIN_TASK_TYPES: dict[str, str] = {
    "analyze": "pools.task_types.analyze:AnalyzeTask",
    "echo": "pools.task_types.echo:EchoTask",
    "shell": "pools.task_types.shell:ShellTask",
    "python": "pools.task_types.python_call:PythonCallTask",
    "prompt": "pools.task_types.prompt:PromptTask",
}

HOW_TO_ADD = (
    "add one by publishing a TaskType subclass under the entry-point group "
    f"'{ENTRY_POINT_GROUP}' (see pools/task_types/base.py)"
)


def load_ref(ref: str) -> type[TaskType]:
    module_name, _, attr = ref.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, TaskType)):
        raise TypeError(f"{ref} is not a TaskType subclass")
    return cls


class TaskTypeRegistry:
    """Which task types exist, which are enabled, and how a worker loads each one."""

    def __init__(self, enabled: list[str], extra_refs: dict[str, str] | None = None) -> None:
        self.refs: dict[str, str] = dict(BUILTIN_TASK_TYPES)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self.refs.setdefault(ep.name, ep.value)
        self.refs.update(extra_refs or {})
        self.enabled = set(enabled)
        self._loaded: dict[str, TaskType] = {}
        # Where split (which runs in the server) may read: set by the manager. Workers get theirs
        # with each task, in RunContext.file_roots.
        self.file_roots: FileRoots | None = None

    def names(self) -> list[str]:
        return sorted(self.refs)

    def get(self, name: str) -> TaskType:
        """The enabled task type called `name`, or an error that says what to do."""
        if name not in self.refs:
            raise UnknownTaskType(
                f"unknown task type {name!r}; available: {', '.join(self.names())} "
                f"(enabled: {', '.join(sorted(self.enabled & set(self.refs)))}); {HOW_TO_ADD}",
                field="task_type",
            )
        if name not in self.enabled:
            raise TaskTypeDisabled(
                f"task type {name!r} is disabled on this server because it executes code or commands; "
                f"the operator can enable it with MAHAVISHNU_ENABLE_TASK_TYPES={name} or by adding it to "
                "enabled_task_types in settings.yaml",
                field="task_type",
            )
        return self.instance(name)

    def instance(self, name: str) -> TaskType:
        if name not in self._loaded:
            try:
                instance = load_ref(self.refs[name])()
                instance.registry = self
                self._loaded[name] = instance
            except Exception as exc:  # a broken plug-in must not take the server down
                raise PoolError(f"task type {name!r} ({self.refs[name]}) failed to load: {exc}") from exc
        return self._loaded[name]

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                tt = self.instance(name)
                out.append({"name": name, "enabled": name in self.enabled, "executes_code": tt.executes_code,
                            "description": tt.description,
                            "payload_schema": tt.payload_model.model_json_schema()})
            except PoolError as exc:
                out.append({"name": name, "enabled": False, "error": str(exc)})
        return out


__all__ = ["BUILTIN_TASK_TYPES", "ENTRY_POINT_GROUP", "RunContext", "TaskType", "TaskTypeRegistry", "chunk",
           "load_ref"]
