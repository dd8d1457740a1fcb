"""Reading our tool results the way any client must: an error has no structuredContent, and
its one text block is the JSON {"error": {code, message, field}} (specs/tools.md)."""

from __future__ import annotations

import json
from typing import Any


def tool_error(result: Any) -> dict[str, Any]:
    assert result.is_error, result
    assert result.structured_content is None, "an error result must carry no structuredContent"
    (block,) = result.content
    error: dict[str, Any] = json.loads(block.text)["error"]
    assert set(error) == {"code", "message", "field"}, error
    return error


def data(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content
