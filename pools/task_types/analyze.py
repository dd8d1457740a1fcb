"""`analyze`: lint Python with pyflakes and return every issue found.

Takes files, directories and inline sources. Inline sources exist because peers and
pods do not share the caller's disk. Read-only, so on by default and idempotent. Every path
is read through the task's file roots (pools.file_roots): inside the roots, regular files
only, within the per-task caps; an issue never quotes the line it was found on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pools.file_roots import FileRoots
from pools.task_types.base import RunContext, TaskType, chunk


class AnalyzePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(default=None, description="One Python file or directory.")
    files: list[str] | None = Field(default=None, description="Python files or directories.")
    sources: dict[str, str] | None = Field(
        default=None, description="Inline sources, {filename: code}, for workers that do not share your disk."
    )

    @model_validator(mode="after")
    def _something_to_lint(self) -> AnalyzePayload:
        if not (self.file or self.files or self.sources):
            raise ValueError("give at least one of file, files or sources")
        return self


def expand_paths(paths: list[str], roots: FileRoots | None = None) -> list[str]:
    """Files as given, directories walked for *.py (skipping VCS, venv and cache dirs), every one
    inside the roots (default: the working directory)."""
    return (roots or FileRoots.from_context(None)).expand(paths, what="payload file")


def _lint(code: str, filename: str) -> list[dict[str, Any]]:
    from pyflakes import api, reporter

    issues: list[dict[str, Any]] = []

    class Collector(reporter.Reporter):  # type: ignore[misc]  # pyflakes ships no types
        def __init__(self) -> None:
            pass

        def flake(self, message: Any) -> None:
            issues.append({
                "file": filename,
                "line": message.lineno,
                "column": (message.col or 0) + 1,
                "code": type(message).__name__,
                "message": message.message % message.message_args,
            })

        def syntaxError(self, fname: str, msg: str, lineno: int, offset: int, text: str) -> None:  # noqa: N802
            issues.append({"file": filename, "line": lineno or 1, "column": offset or 1,
                           "code": "SyntaxError", "message": msg})

        def unexpectedError(self, fname: str, msg: str) -> None:  # noqa: N802
            issues.append({"file": filename, "line": 1, "column": 1, "code": "UnexpectedError", "message": msg})

    api.check(code, filename, Collector())
    return issues


class AnalyzeTask(TaskType):
    name = "analyze"
    description = (
        "Lint Python code with pyflakes. Payload: {'file': path} or {'files': [paths]} (files or "
        "directories on the worker's disk) and/or {'sources': {filename: code}}. Returns every issue "
        "(file, line, column, code, message) and the count."
    )
    payload_model = AnalyzePayload
    idempotent = True

    def file_inputs(self, payload: dict[str, Any]) -> list[tuple[str, str]]:
        return ([("payload.file", payload["file"])] if payload.get("file") else []) + [
            (f"payload.files.{i}", p) for i, p in enumerate(payload.get("files") or [])]

    def run(self, payload: dict[str, Any], context: RunContext) -> Any:
        paths = ([payload["file"]] if payload.get("file") else []) + list(payload.get("files") or [])
        issues: list[dict[str, Any]] = []
        checked = 0
        roots = self.roots(context)
        try:
            files = expand_paths(paths, roots)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no such file or directory on the worker: {exc.filename!r} (roots: "
                                    f"{roots.describe()}); send the code inline as 'sources' when the worker does "
                                    "not share your disk") from None
        for filename in files:
            code = roots.read_text(filename)
            issues.extend(_lint(code, filename))
            checked += 1
        for filename, code in (payload.get("sources") or {}).items():
            issues.extend(_lint(code, filename))
            checked += 1
        return {"issues": issues, "count": len(issues), "files_checked": checked}

    def split(self, payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
        paths = ([payload["file"]] if payload.get("file") else []) + list(payload.get("files") or [])
        roots = self.roots()
        units: list[tuple[str, str | None]] = []
        for path in paths:
            try:
                units += [(p, None) for p in expand_paths([path], roots)]
            except FileNotFoundError:  # its shard fails with the reason, like any other task
                units.append((path, None))
        units += [(name, code) for name, code in (payload.get("sources") or {}).items()]
        if not units:
            return [payload]
        shards = []
        for part in chunk(units, n):
            shard: dict[str, Any] = {}
            files = [name for name, code in part if code is None]
            sources = {name: code for name, code in part if code is not None}
            if files:
                shard["files"] = files
            if sources:
                shard["sources"] = sources
            shards.append(shard)
        return shards

    def reduce(self, results: list[Any]) -> Any:
        issues = [issue for r in results for issue in r.get("issues", [])]
        issues.sort(key=lambda i: (i["file"], i["line"], i["column"]))
        return {"issues": issues, "count": len(issues),
                "files_checked": sum(int(r.get("files_checked", 0)) for r in results)}

    def summarize(self, result: Any) -> str:
        if not isinstance(result, dict):
            return "Analysis complete"
        return f"Analysis complete: {result.get('count', 0)} issues found in {result.get('files_checked', 0)} file(s)"
