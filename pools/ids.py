"""Identifiers: `pool_<12 hex>` for pools, `task_<32 hex>` for tasks."""

from __future__ import annotations

import re
import uuid

POOL_ID_RE = re.compile(r"pool_[0-9a-f]{12}")  # fullmatch: `$` admits a trailing newline
TASK_ID_RE = re.compile(r"task_[0-9a-f]{32}")


def new_pool_id() -> str:
    return f"pool_{uuid.uuid4().hex[:12]}"


def new_task_id() -> str:
    return f"task_{uuid.uuid4().hex}"


def looks_like_pool_id(value: str) -> bool:
    return bool(POOL_ID_RE.fullmatch(value))
