"""The CLI is generated from the tool registry and matches the user documentation."""

from __future__ import annotations

import pytest
import typer.main
from typer.core import TyperArgument, TyperGroup, TyperOption

import cli
from mcp_server.registry import TOOLS
from tests.helpers.cli_app import pools_group

SEED_OPTIONS: dict[str, set[str]] = {
    # from shared/seed/distributed-pool-cli.md, short forms included
    "list": {"--active-only", "--by-type", "--format", "-f"},
    "get": {"--format", "-f"},
    "register": {"--name", "-n", "--type", "-t", "--endpoint", "--max-workers", "-w", "--min-workers", "-m",
                 "--worker-type", "--region", "-r", "--namespace", "--container-image"},
    "execute": {"--task-type", "-t", "--payload", "--pool", "-p", "--timeout", "-T", "--format", "-f"},
    "health": {"--pool", "-p", "--all", "-a", "--format", "-f"},
    "watch": {"--refresh", "-r"},
    "task": {"--format", "-f"},
    "cancel": set(),
    "stats": {"--by-type", "--format", "-f"},
    "scale": {"--target"},
}
SEED_ARGUMENTS = {"get": ["pool"], "task": ["task_id"], "cancel": ["task_id"], "close": ["pool"],
                  "scale": ["pool"]}


@pytest.fixture(scope="module")
def group() -> TyperGroup:
    return pools_group()


def commands(group: TyperGroup, prefix: str = "") -> dict[str, typer.main.TyperCommand]:
    """Every leaf command by its path, e.g. "memory sync"."""
    out: dict[str, typer.main.TyperCommand] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, TyperGroup):
            out.update(commands(command, path + " "))
        else:
            out[path] = command  # type: ignore[assignment]
    return out


def option_names(command: typer.main.TyperCommand) -> set[str]:
    names: set[str] = set()
    for p in command.params:
        if isinstance(p, TyperOption):
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def test_every_tool_has_a_command_and_nothing_else_does(group: TyperGroup) -> None:
    assert set(commands(group)) == {t.command for t in TOOLS}


@pytest.mark.parametrize("spec", TOOLS, ids=[t.command for t in TOOLS])
def test_options_are_the_input_model(group: TyperGroup, spec: cli.ToolSpec) -> None:
    command = commands(group)[spec.command]
    params = {p.name for p in command.params}
    assert params - cli.COMMON == set(spec.input_model.model_fields)
    for p in command.params:
        if p.name in spec.input_model.model_fields:
            info = spec.input_model.model_fields[p.name]
            assert p.required == info.is_required() or p.name in spec.positional, p.name
            if isinstance(p, TyperOption):
                assert cli.words(spec, info.description or "") in (p.help or ""), p.name
    assert [p.name for p in command.params if isinstance(p, TyperArgument)] == list(spec.positional)


SEED_SHORT: dict[str, dict[str, str]] = {  # each short form the seed documents, and the option it stands for
    "list": {"-f": "--format"}, "get": {"-f": "--format"},
    "register": {"-n": "--name", "-t": "--type", "-w": "--max-workers", "-m": "--min-workers", "-r": "--region"},
    "execute": {"-t": "--task-type", "-p": "--pool", "-T": "--timeout", "-f": "--format"},
    "distribute": {"-t": "--task-type", "-s": "--strategy", "-T": "--timeout", "-f": "--format"},
    "health": {"-p": "--pool", "-a": "--all", "-f": "--format"}, "watch": {"-r": "--refresh"},
    "rebalance": {"-s": "--strategy"}, "task": {"-f": "--format"}, "stats": {"-f": "--format"},
}


@pytest.mark.parametrize("command", sorted(SEED_OPTIONS))
def test_seed_options_exist_exactly(group: TyperGroup, command: str) -> None:
    names = option_names(group.commands[command])
    missing = SEED_OPTIONS[command] - names
    assert not missing, f"`pools {command}` lacks {missing}"
    # beyond the seed's, only the tool's own fields and the common options (no stray spellings)
    spec = next(t for t in TOOLS if t.command == command)
    ours = {cli.option_name(f) for f in spec.input_model.model_fields} | {cli.option_name(c) for c in cli.COMMON}
    stray = {n for n in names - SEED_OPTIONS[command] - ours if n.startswith("--") and not n.startswith("--no-")}
    assert stray == set(), stray


@pytest.mark.parametrize("command", sorted(SEED_SHORT))
def test_seed_short_forms_stand_for_the_documented_options(group: TyperGroup, command: str) -> None:
    shorts = {short: long for p in group.commands[command].params if isinstance(p, TyperOption)
              for short in p.opts if not short.startswith("--") for long in p.opts if long.startswith("--")}
    assert {s: shorts.get(s) for s in SEED_SHORT[command]} == SEED_SHORT[command]
    arguments = [p.name for p in group.commands[command].params if isinstance(p, TyperArgument)]
    assert arguments == SEED_ARGUMENTS.get(command, [])


def test_seed_defaults(group: TyperGroup) -> None:
    register = {p.name: p.default for p in group.commands["register"].params}
    assert register["max_workers"] == 10 and register["min_workers"] == 1
    assert register["worker_type"] == "terminal-qwen" and register["region"] == "default"
    assert register["namespace"] == "mahavishnu" and register["container_image"] == "python:3.13-slim"
    execute = {p.name: p.default for p in group.commands["execute"].params}
    assert execute["timeout"] == 300
    watch = {p.name: p.default for p in group.commands["watch"].params}
    assert watch["refresh"] == 1.0
