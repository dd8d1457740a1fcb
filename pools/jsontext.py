"""JSON text of payloads and results, encoded by pydantic-core (Rust).

Several times faster than json.dumps on the large values a distribution carries (20,000
items: 0.3 ms instead of 1.5 ms), and it encodes sets, tuples and datetimes the way a tool
answer shows them (pydantic's JSON mode), so a stored result reads back as it was served.
"""

from __future__ import annotations

import json
import types
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic_core import PydanticSerializationError, to_json

if TYPE_CHECKING:
    from pydantic import BaseModel


_CANNOT = (PydanticSerializationError, ValueError, TypeError)  # e.g. bytes that are not UTF-8


def _by_json(value: Any) -> str:
    """What pydantic-core cannot encode, by the standard library."""
    return json.dumps(value, default=repr, ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON (UTF-8 text, not ASCII-escaped); what JSON has no form for becomes its repr."""
    try:
        return to_json(value, fallback=repr).decode()
    except _CANNOT:
        return _by_json(value)


def size(value: Any) -> int:
    """Bytes of `dumps(value)` as UTF-8, without making the text."""
    try:
        return len(to_json(value, fallback=repr))
    except _CANNOT:
        return len(_by_json(value).encode())


def _free_form(annotation: Any) -> bool:
    """Any, dict[str, Any] or list[Any] (optional or not): a field pydantic does not shape."""
    if annotation is Any:
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and _free_form(rest[0])
    return (origin is dict and args == (str, Any)) or (origin is list and args == (Any,))


_FREE: dict[tuple[type[BaseModel], bool], dict[str, str]] = {}


def _key(name: str, info: Any, by_alias: bool) -> str:
    return (info.serialization_alias or info.alias or name) if by_alias else name


def _free_fields(cls: type[BaseModel], by_alias: bool) -> dict[str, str]:
    """The model's top-level free-form fields: name -> its key in a dump."""
    found = _FREE.get((cls, by_alias))
    if found is None:
        found = _FREE[cls, by_alias] = {name: _key(name, info, by_alias) for name, info in cls.model_fields.items()
                                        if _free_form(info.annotation)}
    return found


def dump(model: BaseModel, *, by_alias: bool = False, exclude_none: bool = False) -> dict[str, Any]:
    """model.model_dump(mode="json"), except that a top-level free-form field (a task's payload or
    result, a map_reduce's reduced result, echo's items) keeps the value it holds. Pydantic walks
    every item of such a value to copy it, 20,000 items in a map_reduce, to no end when the data
    only goes on to be encoded (pydantic-core, the MCP SDK's own JSON-mode dump) as it is. Keys
    come in the order model_dump gives them."""
    free = _free_fields(type(model), by_alias)
    if not free:
        return model.model_dump(mode="json", by_alias=by_alias, exclude_none=exclude_none)
    shaped = model.model_dump(mode="json", by_alias=by_alias, exclude_none=exclude_none, exclude=set(free))
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if name in free:
            value = getattr(model, name)
            if value is not None or not exclude_none:
                out[free[name]] = value
        else:
            key = _key(name, info, by_alias)
            if key in shaped:
                out[key] = shaped.pop(key)
    out.update(shaped)  # extra fields, computed fields
    return out
