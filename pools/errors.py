"""Every error the pool library raises on purpose.

    PoolError                      base; `code` is a stable, machine-readable kind
    ├── InvalidInput               the caller's input is wrong (names the field)
    │   ├── UnknownTaskType        no task type by that name
    │   ├── TaskTypeDisabled       the type exists but the operator has not enabled it
    │   └── LimitExceeded          over an operator limit (names the limit and its setting)
    ├── NotFound
    │   ├── PoolNotFound
    │   └── TaskNotFound
    ├── Conflict                   e.g. a pool name already taken, a finished task cancelled
    ├── PoolUnavailable            the pool cannot take work now (closed, failed, unreachable)
    ├── StoreBusy                  another process owns the state directory
    └── StoreFailure               the state database could not commit (nothing of it was acknowledged)

Lower-layer errors (subprocess, sqlite, MCP client, Kubernetes) are converted at the
edge that meets them, with `raise ... from exc`, so callers handle only this tree.
"""

from __future__ import annotations


class PoolError(Exception):
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(PoolError):
    code = "invalid_input"


class UnknownTaskType(InvalidInput):
    code = "unknown_task_type"


class TaskTypeDisabled(InvalidInput):
    code = "task_type_disabled"


class LimitExceeded(InvalidInput):
    code = "limit_exceeded"


class NotFound(PoolError):
    code = "not_found"


class PoolNotFound(NotFound):
    code = "pool_not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class Conflict(PoolError):
    code = "conflict"


class PoolUnavailable(PoolError):
    code = "pool_unavailable"


class StoreBusy(PoolError):
    code = "store_busy"


class StoreFailure(PoolError):
    code = "store_failure"


def describe_validation_error(exc: Exception, prefix: str = "") -> tuple[str, str | None]:
    """Turn a pydantic ValidationError into one readable line and the first bad field."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc), None
    parts: list[str] = []
    first: str | None = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
        name = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        first = first or name or None
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {msg}" if name else msg)
    return "; ".join(parts), first
