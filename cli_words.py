"""Tool vocabulary -> command-line vocabulary, for help text and error messages.

The tool descriptions and server errors speak to MCP clients (`auto_route`, `wait=false`,
`pools_task`); a person at a terminal reads `--auto-route`, `--no-wait`, `mahavishnu pools task`.
Validation errors are told in our words, not the validation library's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_TOOL = re.compile(r"\bpools_([a-z_]+[a-z])\b")
_ASSIGN = re.compile(r"\b([a-z][a-z_]*)=(true|false)\b")
_IDENT = re.compile(r"`?\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b`?")
_QUOTED = re.compile(r"`([a-z][a-z0-9_]*)`")


def option(field: str) -> str:
    return "--" + field.replace("_", "-")


def cli_words(text: str, fields: Iterable[str], commands: dict[str, str]) -> str:
    """Rewrite `text` for the CLI: tool names become commands, `x=false` becomes --no-x, and the
    input fields named (snake_case, or a single word in backticks) become their options."""
    known = set(fields)

    def tool(m: re.Match[str]) -> str:
        command = commands.get(m[0])
        return f"`mahavishnu pools {command}`" if command else m[0]

    def assign(m: re.Match[str]) -> str:
        if m[1] not in known:
            return m[0]
        return option(m[1]) if m[2] == "true" else "--no-" + m[1].replace("_", "-")

    def ident(m: re.Match[str]) -> str:
        return option(m[1]) if m[1] in known else m[0]

    def quoted(m: re.Match[str]) -> str:
        return option(m[1]) if m[1] in known else m[0]

    text = _TOOL.sub(tool, text)
    text = _ASSIGN.sub(assign, text)
    text = _IDENT.sub(ident, text)
    return _QUOTED.sub(quoted, text)


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number",
            bool: "true/false"}.get(type(value), type(value).__name__)


def explain(err: dict[str, Any], description: str | None = None) -> str:
    """One pydantic error -> what is wrong, in plain words (no "Input should be", no "Value error,")."""
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    bounds = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
              "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {ctx.get(key)}, not {_shown(value)}"
    if kind == "enum":
        return f"{_shown(value)} is not one of {ctx.get('expected', '')}"
    if kind in ("dict_type", "model_type"):
        return f"must be a JSON object, not {_kind(value)}"
    if kind == "list_type":
        return f"must be a JSON list, not {_kind(value)}"
    if kind == "string_pattern_mismatch":
        return (f"{_shown(value)} is not of the expected form: {description}" if description
                else f"{_shown(value)} is not of the expected form ({ctx.get('pattern')})")
    if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not an option here"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number, not {_shown(value)}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number, not {_shown(value)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, not {_shown(value)}"
    return str(err.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
