"""Identifiers: `pool_<12 hex>` for pools, `task_<32 hex>` for tasks."""

from __future__ import annotations

import os
import re
import uuid

POOL_ID_RE = re.compile(r"pool_[0-9a-f]{12}")  # fullmatch: `$` admits a trailing newline
TASK_ID_RE = re.compile(r"task_[0-9a-f]{32}")
TASK_REF_PATTERN = r"^task_[0-9a-f]{8,32}$"  # a full id, or a prefix of one as narrow tables show it
SHORT_TASK_ID = 13  # "task_" and 8 hex digits: what a narrow table shows (followed by "…")


def new_pool_id() -> str:
    return f"pool_{uuid.uuid4().hex[:12]}"


def new_task_id() -> str:
    return f"task_{os.urandom(16).hex()}"  # 128 random bits, as uuid4 has, without building a UUID


def looks_like_task_id(value: str) -> bool:
    return bool(TASK_ID_RE.fullmatch(value))


def looks_like_pool_id(value: str) -> bool:
    return bool(POOL_ID_RE.fullmatch(value))
