"""The user documentation's Python integration examples, taken from its text and run as printed.

docs/distributed-pool-cli.md is the user documentation; each ```python block of its
"Integration" section, and the `>>>` lines of its "Memory Not Syncing" answer, run here in one
namespace, as they would one after another in `mahavishnu shell`. The only edits: `{...}` gets a
payload, and the names the text leaves to the reader are bound first (each listed in READER).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pools.peer_client import PeerClient
from tests.helpers.server import ROOT, cli_env, write_settings
from tests.test_peers import peer

SEED = ROOT / "docs" / "distributed-pool-cli.md"
FILL = '{"step": "API implementation"}'
# Names an example uses without defining: what a reader of the page already has at hand.
READER: dict[int, dict[str, str]] = {
    0: {"PoolConfig": "from mahavishnu.pools import PoolConfig"},
    1: {"task_id": "task_id = result.task_id"},
    2: {"pool_manager": "pool_manager = maha_app.pool_manager"},
}


def examples() -> list[str]:
    text = SEED.read_text()
    section = text[text.index("\n## Integration\n"):]
    section = section[: section.index("\n## ", 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    trouble = text[text.index("### Memory Not Syncing"):]
    trouble = trouble[: trouble.index("\n### ", 5)]
    blocks.append("\n".join(line[4:] for line in trouble.splitlines() if line.startswith(">>> ")))
    return blocks


def shell_steps(heading: str) -> list[str]:
    """The `>>>` lines of one troubleshooting answer (each follows a `mahavishnu shell`)."""
    text = SEED.read_text()
    answer = text[text.index(heading):]
    answer = answer[: answer.index("\n### ", 5)]
    assert "mahavishnu shell" in answer
    return [line[4:] for line in answer.splitlines() if line.startswith(">>> ")]


def test_the_troubleshooting_steps_run_in_mahavishnu_shell(tmp_path: Path) -> None:
    """`mahavishnu shell` as a user types into it: the documented lines, one task run first."""
    home = tmp_path / "home"
    with peer(tmp_path / "peer") as (peer_url, _):
        write_settings(home, ("echo",), extra=f"memory_endpoint: {peer_url}\n")
        typed = [*shell_steps("### Tasks Not Executing"),
                 'await maha_app.pool_manager.execute_on_pool("default", {"task_type": "echo", "payload": {"x": 1}})',
                 "maha_app.pool_manager", *shell_steps("### Memory Not Syncing")]
        assert typed[0] == "maha_app.pool_manager" and typed[-1].startswith("await aggregator.collect_and_sync")
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "shell"], input="\n".join(typed) + "\n",
                              cwd=tmp_path, env=cli_env(home), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "`await` works at the prompt" in done.stderr  # the banner (the console writes it to stderr)
    assert "Traceback" not in done.stderr, done.stderr
    shown = done.stdout
    assert f"<AppPoolManager on {home}: not started (it starts on first use)>" in shown
    assert "state=<TaskState.COMPLETED: 'completed'>" in shown
    assert f"<AppPoolManager on {home}: started, 1 pool (1 running)" in shown
    assert f"SyncReport(endpoint='{peer_url}', method='store_conversation', pushed=1," in shown, shown


def test_the_seed_has_the_examples_this_test_runs() -> None:
    blocks = examples()
    assert len(blocks) == 4
    assert "from mahavishnu.core.app import MahavishnuApp" in blocks[0]
    assert "EventCollector" in blocks[1] and "cross_pool_search" in blocks[2]
    assert "collect_and_sync(maha_app.pool_manager)" in blocks[3]


async def run_block(source: str, namespace: dict[str, Any]) -> None:
    code = compile(source, str(SEED), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    pending = eval(code, namespace)  # noqa: S307 - the documentation's own example
    if pending is not None:
        await pending


async def test_every_integration_example_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    events = tmp_path / "events.jsonl"
    with peer(tmp_path / "peer") as (peer_url, _):
        write_settings(home, ("analyze", "echo", "workflow_step"), default_pool=False, extra=(
            "task_type_refs: {workflow_step: 'tests.helpers.workflow_step:WorkflowStep'}\n"
            f"memory_endpoint: {peer_url}\nevent_log: {events}\n"))
        for name in ("MAHAVISHNU_ENABLE_TASK_TYPES", "MAHAVISHNU_IDLE_TIMEOUT", "MAHAVISHNU_RETENTION_DAYS"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MAHAVISHNU_HOME", str(home))
        namespace: dict[str, Any] = {"__name__": "seed"}
        try:
            for index, block in enumerate(examples()):
                assert block.count("...") == block.count("{...}")  # the only gap a reader fills
                for binding in READER.get(index, {}).values():
                    await run_block(binding, namespace)
                await run_block(block.replace("{...}", FILL), namespace)
            app, result = namespace["maha_app"], namespace["result"]
            # workflow: a pool spawned from PoolConfig(pool_type=...) ran the task
            assert namespace["pool_id"].startswith("pool_") and result.state.value == "completed"
            assert result.result == {"step": "API implementation", "done": True}
            assert app.pool_manager.get_pool(namespace["pool_id"]).name == "workflow-pool"
            # the collected event is in the event log (store and JSON lines) beside the pools' own
            stored = [dict(r) for r in app.pool_manager.store.events(pool_id=namespace["pool_id"])]
            mine = [e for e in stored if e["kind"] == "pool_task_completed"]
            assert len(mine) == 1 and mine[0]["task_id"] == result.task_id
            assert json.loads(mine[0]["data"]) == {"duration": 5.23, "status": "completed"}
            lines = [json.loads(line) for line in events.read_text().splitlines()]
            assert {"kind": "pool_task_completed", "task_id": result.task_id, "duration": 5.23}.items() <= \
                [e for e in lines if e["kind"] == "pool_task_completed"][0].items()
            # memory: synced to the Session-Buddy (the second sync finds nothing left) and found again
            found = namespace["results"]
            assert [h.task_id for h in found.results if h.source == "local"] == [result.task_id]
            assert app.pool_manager.store.memory.count_unsynced() == 0
            reply = await PeerClient(peer_url).call("search_conversations", {"query": "API implementation"}, 15)
            assert [r["metadata"]["task_id"] for r in reply.data["results"]] == [result.task_id]
        finally:
            if "maha_app" in namespace:
                await namespace["maha_app"].close()
