"""JSON text of payloads and results, encoded by pydantic-core (Rust).

Several times faster than json.dumps on the large values a distribution carries (20,000
items: 0.3 ms instead of 1.5 ms), and it encodes sets, tuples and datetimes the way a tool
answer shows them (pydantic's JSON mode), so a stored result reads back as it was served.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticSerializationError, to_json


def dumps(value: Any) -> str:
    """Compact JSON (UTF-8 text, not ASCII-escaped); what JSON has no form for becomes its repr."""
    try:
        return to_json(value, fallback=repr).decode()
    except (PydanticSerializationError, ValueError, TypeError):  # e.g. bytes that are not UTF-8
        return json.dumps(value, default=repr, ensure_ascii=False)


def size(value: Any) -> int:
    """Bytes of `dumps(value)` as UTF-8, without making the text."""
    try:
        return len(to_json(value, fallback=repr))
    except (PydanticSerializationError, ValueError, TypeError):
        return len(json.dumps(value, default=repr, ensure_ascii=False).encode())
