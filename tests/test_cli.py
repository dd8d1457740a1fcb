"""The `mahavishnu` CLI as a subprocess, in its three connection modes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers.ports import free_port
from tests.helpers.server import run_cli, running_server, write_settings
from tests.helpers.waiting import wait_until_sync


def test_embedded_mode_runs_a_real_job_with_nothing_started(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "test.py"
    src.write_text("import os\n\nprint(undefined)\n")
    result = run_cli(home, "pools", "execute", "--task-type", "analyze", "--payload", json.dumps({"file": str(src)}))
    assert result.returncode == 0, result.stderr
    assert re.search(r"✓ Routed to pool: pool_[0-9a-f]{12} \(default\)", result.stdout)
    assert "✓ Task completed" in result.stdout
    assert "Output: Analysis complete: 2 issues found in 1 file(s)" in result.stdout
    # the result is in the store: a second process reads it back
    task_id = re.search(r"Task: (task_[0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    shown = run_cli(home, "pools", "task", task_id, "--format", "json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["result"]["count"] == 2


def test_exit_codes_and_messages(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    missing = run_cli(home, "pools", "execute", "-t", "analyze", "--payload", '{"file": "no-such-dir/x.py"}')
    assert missing.returncode == 1 and "✗ Task failed" in missing.stdout
    assert "no such file or directory on the worker" in missing.stdout
    bad_json = run_cli(home, "pools", "execute", "-t", "analyze", "--payload", "{nope")
    assert bad_json.returncode == 2 and "--payload is not valid JSON" in bad_json.stderr
    bad_range = run_cli(home, "pools", "register", "-n", "x", "-m", "5", "-w", "2")
    assert bad_range.returncode == 2 and "--min-workers (5) is larger than --max-workers (2)" in bad_range.stderr
    no_pool = run_cli(home, "pools", "get", "ghost")
    assert no_pool.returncode == 2 and "`mahavishnu pools list` shows the pools" in no_pool.stderr
    unknown = run_cli(home, "pools", "execute", "-t", "compute", "--payload", "{}")
    assert unknown.returncode == 2 and "available: analyze, echo, prompt, python, shell" in unknown.stderr
    no_wait = run_cli(home, "pools", "execute", "-t", "echo", "--payload", "{}", "--no-wait")
    assert no_wait.returncode == 2 and "--no-wait needs a running server" in no_wait.stderr
    watch = run_cli(home, "pools", "watch")
    assert watch.returncode == 2 and "needs a running server" in watch.stderr
    snapshot = run_cli(home, "pools", "watch", "-f", "json")  # one snapshot works anywhere
    assert snapshot.returncode == 0 and json.loads(snapshot.stdout)["active"] >= 1
    nobody = f"http://127.0.0.1:{free_port()}/mcp"  # free a moment ago: nothing listens there
    unreachable = run_cli(home, "pools", "list", "--url", nobody)
    assert unreachable.returncode == 3 and f"cannot reach the server at {nobody}" in unreachable.stderr
    usage = run_cli(home, "pools", "list", "--no-such-option")
    assert usage.returncode == 2


# Many CLI processes, each starting an embedded server or its workers: under two concurrent suites on
# a shared 2-core machine one call took over 10 s, so these tests get a ceiling of minutes, not 120 s.
@pytest.mark.timeout(600)
def test_seed_outputs_in_each_format(home: Path) -> None:
    write_settings(home)
    reg = run_cli(home, "pools", "register", "--name", "local-pool", "--type", "mahavishnu",
                  "--min-workers", "2", "--max-workers", "5")
    assert reg.returncode == 0, reg.stderr
    assert "✓ Registered pool: pool_" in reg.stdout and "Workers: 2 (2-5)" in reg.stdout
    table = run_cli(home, "pools", "list")
    assert "Active Pools" in table.stdout and "local-pool" in table.stdout and "2-5" in table.stdout
    assert "●" in table.stdout
    listed = json.loads(run_cli(home, "pools", "list", "--format", "json").stdout)
    pool = next(p for p in listed["pools"] if p["name"] == "local-pool")
    assert {"pool_id", "name", "pool_type", "status", "workers", "min_workers", "max_workers"} <= set(pool)
    md = run_cli(home, "pools", "list", "--format", "markdown").stdout
    assert md.startswith("## Active Pools") and "| Pool ID | Name | Type | Status | Workers | Region |" in md
    got = run_cli(home, "pools", "get", "local-pool").stdout
    for line in ("Name: local-pool", "Type: mahavishnu", "Status: ● RUNNING", "Workers: 2 (2-5)",
                 "Region: default", "Metrics:", "Tasks Completed: 0", "Memory Usage:"):
        assert line in got, got
    stats = run_cli(home, "pools", "stats", "--by-type").stdout
    assert "Pool Statistics" in stats and "mahavishnu_pools" in stats and "mahavishnu_workers" in stats
    health = run_cli(home, "pools", "health", "--all").stdout
    assert "Pool Manager Health: HEALTHY" in health and "Pool Status:" in health
    closed = run_cli(home, "pools", "close", "local-pool")
    assert closed.returncode == 0 and "✓ Pool closed" in closed.stdout


@pytest.mark.timeout(600)  # as above
def test_running_server_and_url_modes(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    gate = tmp_path / "gate"
    with running_server(home) as (url, _):
        # found through server.json
        reg = run_cli(home, "pools", "register", "-n", "served", "-m", "1", "-w", "2")
        assert reg.returncode == 0, reg.stderr
        queued = run_cli(home, "pools", "execute", "-p", "served", "-t", "python", "--no-wait", "-f", "json",
                         "--payload", json.dumps({"target": "tests.helpers.tasks:wait_for_file",
                                                  "args": [str(gate)]}))
        assert queued.returncode == 0, queued.stderr
        task_id = json.loads(queued.stdout)["task"]["task_id"]
        # the task outlives the command that started it; --url reaches the same server
        other = tmp_path / "elsewhere"
        other.mkdir()
        status = run_cli(other, "pools", "task", task_id, "--url", url)
        assert status.returncode == 0 and f"Task: {task_id}" in status.stdout
        cancelled = run_cli(other, "pools", "cancel", task_id, "--url", url)
        assert cancelled.returncode == 0 and "✓ Task cancelled" in cancelled.stdout
        again = json.loads(run_cli(home, "pools", "task", task_id, "-f", "json").stdout)
        assert again["state"] == "cancelled"
        scaled = run_cli(home, "pools", "scale", "served", "--target", "2")
        assert scaled.returncode == 0 and "2 workers" in scaled.stdout
        progress = run_cli(home, "pools", "execute", "-p", "served", "-t", "echo", "--payload", '{"a": 1}',
                           "--format", "progress")
        assert progress.returncode == 0 and "100%" in progress.stdout and "✓ Task completed" in progress.stdout
        routed = run_cli(home, "pools", "execute", "--auto-route", "-t", "echo", "--payload", "{}")
        assert routed.returncode == 0 and "Routing: least_loaded" in routed.stdout
        spread = run_cli(home, "pools", "distribute", "-t", "echo", "--payload", '{"items": [1, 2, 3, 4, 5]}',
                         "-s", "map_reduce", "--format", "progress")
        assert spread.returncode == 0, spread.stderr
        assert "Strategy: map_reduce" in spread.stdout and "✓ Distribution completed" in spread.stdout
        assert "Failed: 0" in spread.stdout and "100%" in spread.stdout
        # real queued work on a one-worker pool: rebalance moves what waits to the pools with room
        assert run_cli(home, "pools", "register", "-n", "busy", "-m", "1", "-w", "1").returncode == 0
        held = tmp_path / "held"
        waiting = [json.loads(run_cli(home, "pools", "execute", "-p", "busy", "-t", "python", "--no-wait", "-f",
                                      "json", "--payload", json.dumps({"target": "tests.helpers.tasks:wait_for_file",
                                                                       "args": [str(held)]})).stdout)["task"]["task_id"]
                   for _ in range(3)]
        wait_until_sync(lambda: json.loads(run_cli(home, "pools", "task", waiting[0], "-f", "json").stdout)["state"]
                        == "running", timeout=60, what="the first task to hold busy's only worker")
        rebalanced = run_cli(home, "pools", "rebalance", "-s", "round_robin")
        assert rebalanced.returncode == 0 and "✓ Rebalanced (round_robin): moved 2 queued tasks" in rebalanced.stdout
        moves = re.findall(r"moved (task_[0-9a-f]{32}): busy → (\S+)", rebalanced.stdout)
        assert sorted(t for t, _ in moves) == sorted(waiting[1:]) and {p for _, p in moves} == {"default", "served"}
        held.touch()
        seen: dict[str, object] = {}

        def completed(task_id: str) -> bool:
            seen.clear()
            seen.update(json.loads(run_cli(home, "pools", "task", task_id, "-f", "json").stdout))
            return seen["state"] == "completed"

        for task_id in waiting:
            try:
                wait_until_sync(lambda t=task_id: completed(t), timeout=60,
                                what=f"{task_id} to finish where it was moved")
            except AssertionError as exc:  # say how it stands: which pool, which state, which error
                raise AssertionError(f"{exc}; last seen: {seen}") from None


@pytest.mark.timeout(600)  # as above
def test_watch_shows_a_live_table_and_exits_cleanly_on_ctrl_c(home: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.server import ROOT, cli_env

    write_settings(home)
    with running_server(home):
        watch = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "pools", "watch", "--refresh", "0.2"],
                                 cwd=ROOT, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert watch.stdout is not None
        seen = ""
        deadline = time.monotonic() + 120
        while "default" not in seen and time.monotonic() < deadline:
            seen += watch.stdout.readline()
        assert "Pool Monitor (Active: 1)" in seen and "default" in seen
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=90)
        assert watch.returncode == 0, err
        assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["pools", "--help"], ["pools", "execute", "--help"]])
def test_help_does_not_import_the_mcp_sdk(argv: list[str], home: Path) -> None:
    import subprocess
    import sys

    from tests.helpers.server import ROOT, cli_env

    code = ("import sys, cli\n"
            f"try:\n    cli.app({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('MCP-LOADED' if 'mcp' in sys.modules else 'MCP-FREE')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(home), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip().endswith("MCP-FREE"), out.stdout[-500:] + out.stderr
