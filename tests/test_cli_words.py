"""What the CLI says, word for word: help in options (not tool fields), errors that name the
option, our own words for bad values, plurals, tables that fit 80 columns, completion."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

import cli
from mcp_server.registry import BY_COMMAND
from tests.helpers.server import cli_env, run_cli, running_server, write_settings

SNAKE = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def leaf_commands() -> list[str]:
    root = typer.main.get_command(cli.app)
    assert isinstance(root, TyperGroup)
    pools = root.commands["pools"]
    assert isinstance(pools, TyperGroup)
    out = []
    for name, command in pools.commands.items():
        if isinstance(command, TyperGroup):
            out += [f"{name} {sub}" for sub in command.commands]
        else:
            out.append(name)
    return sorted(out)


@pytest.mark.parametrize("command", leaf_commands())
def test_help_speaks_in_options_not_tool_fields(command: str) -> None:
    result = CliRunner().invoke(cli.app, ["pools", *command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "pools_" not in text and "=false" not in text and "=true" not in text, text
    fields = set(BY_COMMAND[command].input_model.model_fields)
    leaked = {w for w in SNAKE.findall(text) if w in fields}
    assert leaked == set(), f"{command} --help names fields {leaked} instead of their options"
    assert "Value error" not in text and "Input should" not in text


def test_watch_help_says_what_the_command_does() -> None:
    text = CliRunner().invoke(cli.app, ["pools", "watch", "--help"], env={"COLUMNS": "200"}).output
    assert "refreshed every --refresh seconds until Ctrl-C" in text and "Call it repeatedly" not in text


LOCAL_ERRORS = [  # checked by the CLI before any server is involved
    (["execute", "--auto-route", "--strategy", "fastest", "-t", "echo"],
     "Invalid value for --strategy: 'fastest' is not one of least_loaded, round_robin, random, affinity"),
    (["distribute", "-s", "fastest", "-t", "echo"],
     "'fastest' is not one of round_robin, broadcast, random, least_loaded, map_reduce"),
    (["list", "--by-type", "foo"], "Invalid value for --by-type: 'foo' is not one of mahavishnu, session-buddy, "
                                   "kubernetes"),
    (["register", "-n", "x", "-m", "5", "-w", "2"], "--min-workers (5) is larger than --max-workers (2)"),
    (["register", "-n", "x", "-t", "session-buddy"], "a session-buddy pool needs --endpoint (e.g. "),
    (["execute", "-t", "echo", "-T", "-1"], "--timeout: must be greater than 0.0, not -1.0"),
    (["execute", "-t", "echo", "--payload", "[1]"], "--payload: must be a JSON object, not a list"),
    (["task", "nope"], "TASK_ID: 'nope' is not of the expected form: Task id (task_<32 hex>)"),
    (["register", "-n", "bad name"], "--name: must start with a letter or digit"),
]


@pytest.mark.parametrize(("args", "message"), LOCAL_ERRORS, ids=[" ".join(a[:3]) for a, _ in LOCAL_ERRORS])
def test_usage_errors_name_the_option_in_plain_words(home: Path, args: list[str], message: str) -> None:
    result = run_cli(home, "pools", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Value error" not in result.stderr and "Input should" not in result.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("words") / "home"
    write_settings(home, ("analyze", "echo"))
    with running_server(home):
        assert run_cli(home, "pools", "scale", "default", "--target", "1").returncode == 0
        for i in range(3):
            assert run_cli(home, "pools", "execute", "-t", "echo", "--payload", json.dumps({"i": i})).returncode == 0
        yield home


SERVER_ERRORS = [  # said by the server (for any MCP client), told in options by the CLI
    (["execute", "--auto-route", "-p", "default", "-t", "echo"], "give either --pool or --auto-route, not both"),
    (["execute", "--auto-route", "--strategy", "affinity", "-t", "echo"], "--strategy affinity needs --affinity-key"),
    (["distribute", "-t", "echo", "--payload", '{"items": [1]}', "--pool-filter", "kubernetes"],
     "there are no kubernetes pools (--pool-filter kubernetes), only 1 pool of other types; register one with "
     "`mahavishnu pools register --type kubernetes`"),
    (["discover", "--from-ecosystem"], "no ecosystem file at "),
    (["scale", "default", "--target", "50"], "target 50 is outside the range 1-"),
]


@pytest.mark.parametrize(("args", "message"), SERVER_ERRORS, ids=[" ".join(a[:2]) for a, _ in SERVER_ERRORS])
def test_server_errors_are_told_in_options(served: Path, args: list[str], message: str) -> None:
    result = run_cli(served, "pools", *args)
    assert result.returncode in (1, 2), result.stdout
    assert message in result.stderr
    assert "pool 'default''s" not in result.stderr


def test_a_missing_ecosystem_file_is_an_error_not_a_fallback(served: Path) -> None:
    result = run_cli(served, "pools", "discover", "--from-ecosystem", "--auto-register")
    assert result.returncode == 2
    assert f"no ecosystem file at {served / 'ecosystem.yaml'}" in result.stderr
    assert "Discovery from" not in result.stdout  # nothing was probed instead


def test_plurals(served: Path) -> None:
    health = run_cli(served, "pools", "health")
    assert re.search(r"\(default\): 1 worker\b", health.stdout) and "1 workers" not in health.stdout
    spread = run_cli(served, "pools", "distribute", "-t", "echo", "--payload", '{"items": [1, 2]}')
    assert "Distributing task across 1 pool..." in spread.stdout
    scaled = run_cli(served, "pools", "scale", "default", "--target", "1")
    assert "scaled: 1 worker (" in scaled.stdout


def test_tables_fit_80_columns_with_short_ids_and_wide_shows_them_whole(served: Path) -> None:
    count = len(json.loads(run_cli(served, "pools", "tasks", "-f", "json").stdout)["tasks"])
    narrow = run_cli(served, "pools", "tasks", COLUMNS="80")
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), narrow.stdout
    rows = [line for line in lines if "task_" in line]
    assert len(rows) == count >= 3 and all(re.search(r"task_[0-9a-f]{8}… .* ✓ completed", row) for row in rows), rows
    for command in (["list"], ["health"]):
        out = run_cli(served, "pools", *command, COLUMNS="80").stdout
        assert all(len(line) <= 80 for line in out.splitlines()) and re.search(r"pool_[0-9a-f]{4}…", out), out
    wide = run_cli(served, "pools", "tasks", "--wide", COLUMNS="200")
    assert len(re.findall(r"task_[0-9a-f]{32}", wide.stdout)) == count
    full = run_cli(served, "pools", "tasks", COLUMNS="200")  # a wide terminal needs no --wide
    assert len(re.findall(r"task_[0-9a-f]{32}", full.stdout)) == count


def test_a_short_id_from_a_narrow_table_can_be_pasted(served: Path) -> None:
    whole = json.loads(run_cli(served, "pools", "tasks", "-f", "json").stdout)["tasks"][0]
    narrow = run_cli(served, "pools", "tasks", COLUMNS="80").stdout
    short = next(m for m in re.findall(r"task_[0-9a-f]{8}…", narrow) if whole["task_id"].startswith(m[:-1]))
    shown = json.loads(run_cli(served, "pools", "task", short, "-f", "json").stdout)
    assert shown["task_id"] == whole["task_id"]
    assert json.loads(run_cli(served, "pools", "task", short[:-1], "-f", "json").stdout)["task_id"] == whole["task_id"]
    pool = re.search(r"pool_[0-9a-f]{4}…", run_cli(served, "pools", "list", COLUMNS="80").stdout)
    assert pool, "the narrow list shows a short pool id"
    got = json.loads(run_cli(served, "pools", "get", pool.group(0), "-f", "json").stdout)
    assert got["pool_id"].startswith(pool.group(0)[:-1]) and got["name"] == "default"
    unknown = run_cli(served, "pools", "task", "task_00000000")
    assert unknown.returncode != 0 and "no task id starts with 'task_00000000'" in unknown.stderr
    too_short = run_cli(served, "pools", "task", "task_0123")
    assert too_short.returncode == 2 and "TASK_ID" in too_short.stderr, too_short.stderr


def test_stats_shows_memory(served: Path) -> None:
    stats = run_cli(served, "pools", "stats")
    assert re.search(r"Memory Usage\s+│\s+[\d.]+ MB", stats.stdout), stats.stdout
    assert json.loads(run_cli(served, "pools", "stats", "-f", "json").stdout)["memory_mb"] > 0


def test_shell_completion_is_on(home: Path) -> None:
    script = run_cli(home, "--show-completion", SHELL="/bin/bash")  # the shell it prints the script for
    assert script.returncode == 0 and "complete" in script.stdout and "mahavishnu" in script.stdout, script.stderr
    # completing the choices of an enum option, as the shell would ask
    env = cli_env(home, _MAHAVISHNU_COMPLETE="complete_bash", COMP_WORDS="mahavishnu pools distribute --strategy ",
                  COMP_CWORD="4")
    mahavishnu = shutil.which("mahavishnu")
    assert mahavishnu, "the package's console script is not installed (pip install -e '.[test]')"
    done = subprocess.run([mahavishnu], env=env, capture_output=True, text=True, timeout=60)
    assert {"round_robin", "map_reduce", "broadcast"} <= set(done.stdout.split()), done.stdout + done.stderr
