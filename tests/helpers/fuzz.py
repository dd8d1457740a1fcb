"""Bad inputs for every tool, derived from its published input schema: for each field a value
of the wrong type, one out of range, one that misses its pattern or length, the field left
out when it is required, plus an unknown key. Each must come back as invalid_input naming
the field. Also the domain errors (unknown pool, disabled type, ...) and a valid call plan."""

from __future__ import annotations

from typing import Any

from mcp_server.registry import TOOLS
from tests.helpers.ports import free_port
from tests.helpers.replies import tool_error

TASK_ID = "task_" + "0" * 32
NOBODY = f"http://127.0.0.1:{free_port()}/mcp"  # a loopback port nothing listens on
# Schema-valid values for the required fields: a case breaks exactly one field.
BASE: dict[str, dict[str, Any]] = {
    "pools_get": {"pool": "x"}, "pools_close": {"pool": "x"}, "pools_scale": {"pool": "x", "target": 1},
    "pools_register": {"name": "x"}, "pools_execute": {"task_type": "echo"}, "pools_distribute": {"task_type": "echo"},
    "pools_task": {"task_id": TASK_ID}, "pools_cancel": {"task_id": TASK_ID}, "pools_memory_search": {"query": "x"},
}

WRONG_TYPE = {"string": 12345, "integer": "many", "number": "far", "boolean": [True], "object": 7, "array": 7}


def _kinds(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The JSON types a property allows, and the non-null branch that carries its constraints."""
    branches = prop.get("anyOf", [prop])
    kinds, main = [], prop
    for branch in branches:
        if "$ref" in branch:
            branch = defs[branch["$ref"].split("/")[-1]]
        if branch.get("type") and branch["type"] != "null":
            kinds.append(branch["type"])
            main = {**branch, **{k: v for k, v in prop.items() if k not in ("anyOf", "$ref")}}
        elif branch.get("type") == "null":
            kinds.append("null")
    return kinds, main


def schema_cases() -> list[tuple[str, dict[str, Any], str, str]]:
    """(tool, arguments, code, field) for every field of every tool."""
    cases: list[tuple[str, dict[str, Any], str, str]] = []
    for spec in TOOLS:
        schema = spec.input_model.model_json_schema()
        defs = schema.get("$defs", {})
        base = BASE.get(spec.name, {})
        assert set(schema.get("required", [])) <= set(base), f"BASE lacks {spec.name}'s required fields"

        def case(field: str, value: Any, spec_name: str = spec.name, base: dict[str, Any] = base) -> None:
            cases.append((spec_name, {**base, field: value}, "invalid_input", field))

        for field, prop in schema["properties"].items():
            kinds, main = _kinds(prop, defs)
            kind = next(k for k in kinds if k != "null")
            case(field, WRONG_TYPE[kind])
            if "enum" in main:
                case(field, "no-such-choice")
            for bound, step in (("minimum", -1), ("maximum", 1), ("exclusiveMinimum", 0)):
                if bound in main:
                    case(field, main[bound] + step)
            if "pattern" in main:
                case(field, "!pattern-miss")
            if main.get("minLength", 0) > 0:
                case(field, "")
            if kind == "array" and main.get("items", {}).get("type") == "string":
                case(field, [1])  # a wrong item type
            if field in schema.get("required", []):
                cases.append((spec.name, {k: v for k, v in base.items() if k != field}, "invalid_input", field))
        cases.append((spec.name, {**base, "no_such_option": 1}, "invalid_input", "no_such_option"))
    return cases


# Errors the tools themselves find, after the arguments passed the schema.
DOMAIN_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("pools_get", {"pool": "nope"}, "pool_not_found", "pool"),
    ("pools_register", {"name": "x", "min_workers": 5, "max_workers": 2}, "invalid_input", "min_workers"),
    ("pools_register", {"name": "sb", "type": "session-buddy"}, "invalid_input", "endpoint"),
    ("pools_register", {"name": "default"}, "conflict", "name"),
    ("pools_execute", {"task_type": "compute", "payload": {}}, "unknown_task_type", "task_type"),
    ("pools_execute", {"task_type": "prompt", "payload": {"prompt": "hi"}}, "task_type_disabled", "task_type"),
    ("pools_execute", {"task_type": "analyze", "payload": {}}, "invalid_input", "payload"),
    ("pools_execute", {"task_type": "shell", "payload": {"argv": "ls"}}, "invalid_input", "payload.argv"),
    ("pools_execute", {"task_type": "echo", "pool": "ghost"}, "pool_not_found", "pool"),
    ("pools_execute", {"task_type": "echo", "auto_route": True, "pool": "default"}, "invalid_input", "auto_route"),
    ("pools_execute", {"task_type": "echo", "auto_route": True, "strategy": "affinity"}, "invalid_input",
     "affinity_key"),
    ("pools_task", {"task_id": TASK_ID}, "task_not_found", "task_id"),
    ("pools_cancel", {"task_id": TASK_ID}, "task_not_found", "task_id"),
    ("pools_tasks", {"pool": "ghost"}, "pool_not_found", "pool"),
    ("pools_distribute", {"task_type": "echo", "pool_filter": "kubernetes"}, "pool_unavailable", "pool_filter"),
    ("pools_health", {"pool": "ghost"}, "pool_not_found", "pool"),
    ("pools_close", {"pool": "ghost"}, "pool_not_found", "pool"),
    ("pools_scale", {"pool": "default", "target": 99}, "invalid_input", "target"),
    ("pools_discover", {"ecosystem_file": "/nonexistent/eco.yaml"}, "invalid_input", "ecosystem_file"),
    # the trust boundary (SECURITY.md): names in full, no client-given paths or secrets, no metadata address
    ("pools_register", {"name": "default\n"}, "invalid_input", "name"),
    ("pools_register", {"name": "k", "type": "kubernetes", "kubeconfig": "/root/.kube/config"}, "invalid_input",
     "kubeconfig"),
    ("pools_register", {"name": "b", "type": "session-buddy", "endpoint": "http://169.254.169.254/mcp"},
     "invalid_input", "endpoint"),
    ("pools_register", {"name": "b", "type": "session-buddy", "endpoint": NOBODY,
                        "credential": "nope"}, "invalid_input", "credential"),
    ("pools_memory_sync", {"endpoint": "http://10.1.2.3:8678/mcp"}, "invalid_input", "endpoint"),
]


def valid_plan(name: str, gate: str) -> list[dict[str, Any]]:
    """A call of every tool with good input; "$N.path" refers to call N's structured result."""
    return [
        {"tool": "pools_register", "args": {"name": name, "min_workers": 1, "max_workers": 2}},
        {"tool": "pools_list", "args": {}},
        {"tool": "pools_get", "args": {"pool": name}},
        {"tool": "pools_execute", "args": {"pool": name, "task_type": "echo", "payload": {"x": 1}}},
        {"tool": "pools_task", "args": {"task_id": "$3.task.task_id"}},
        {"tool": "pools_tasks", "args": {"pool": name}},
        {"tool": "pools_stats", "args": {"by_type": True}},
        {"tool": "pools_health", "args": {}},
        {"tool": "pools_watch", "args": {}},
        {"tool": "pools_scale", "args": {"pool": name, "target": 2}},
        {"tool": "pools_distribute", "args": {"task_type": "echo", "strategy": "map_reduce",
                                              "payload": {"items": [1, 2, 3]}}},
        {"tool": "pools_rebalance", "args": {}},
        {"tool": "pools_ping", "args": {}},
        {"tool": "pools_task_types", "args": {}},
        {"tool": "pools_memory_search", "args": {"query": "echo"}},
        {"tool": "pools_memory_sync", "args": {"endpoint": NOBODY}},
        {"tool": "pools_discover", "args": {"ecosystem_file": None}},
        {"tool": "pools_execute", "args": {"pool": name, "task_type": "python", "wait": False,
                                           "payload": {"target": "tests.helpers.tasks:wait_for_file",
                                                       "args": [gate]}}},
        {"tool": "pools_cancel", "args": {"task_id": "$17.task.task_id"}},
        {"tool": "pools_close", "args": {"pool": name}},
        {"tool": "pools_credentials", "args": {}},
    ]


async def check_bad_inputs(client: Any) -> None:
    """Every kind of bad input, for every tool, is our error naming the field (tests/helpers/fuzz.py)."""
    cases = DOMAIN_CASES + schema_cases()
    for tool, args, code, field in cases:
        error = tool_error(await client.call_tool(tool, args))
        assert (error["code"], error["field"]) == (code, field), (tool, args, error)
        assert error["message"] and "pydantic" not in error["message"], error  # ours, not the SDK's text
    assert {t for t, *_ in cases} == {t.name for t in TOOLS}
