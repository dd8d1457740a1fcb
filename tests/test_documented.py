"""Every documented feature that had no test of its own, exercised the way the README says to use
it: environment variables, retention, periodic memory sync, tokens on peers and servers,
entry-point task types, and the CLI commands and options people reach for first."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from pools.errors import PoolUnavailable, TaskNotFound
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolStatus, PoolType, TaskState
from pools.peer_client import PeerClient
from pools.settings import Settings
from tests.conftest import make_settings
from tests.helpers.ports import free_port
from tests.helpers.server import ROOT, cli_env, run_cli, running_server, write_settings
from tests.helpers.waiting import wait_until, wait_until_sync
from tests.test_peers import peer, settings_for


def installed(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The `mahavishnu` command that `pip install` put on PATH, not `python cli.py`."""
    command = shutil.which("mahavishnu")
    assert command, "the console script is not installed: pip install -e '.[test]'"
    return subprocess.run([command, *args], env=cli_env(home, **env), capture_output=True, text=True, timeout=120,
                          cwd=home)


def test_the_installed_command_pings_and_lists_task_types_with_enable_from_the_environment(home: Path) -> None:
    write_settings(home, ("analyze", "echo"))
    version = installed(home, "--version")
    assert version.returncode == 0 and version.stdout.startswith("mahavishnu "), version.stderr
    pong = installed(home, "pools", "ping")
    assert pong.returncode == 0 and "✓ Server answered (version " in pong.stdout, pong.stderr
    def enabled(**env: str) -> dict[str, bool]:
        listed = installed(home, "pools", "task-types", "-f", "json", **env)
        assert listed.returncode == 0, listed.stderr
        return {t["name"]: t["enabled"] for t in json.loads(listed.stdout)["task_types"]}

    assert enabled() == {"analyze": True, "echo": True, "prompt": False, "python": False, "shell": False}
    assert enabled(MAHAVISHNU_ENABLE_TASK_TYPES="shell,python")["shell"] is True
    table = installed(home, "pools", "task-types", MAHAVISHNU_ENABLE_TASK_TYPES="shell")
    assert "Task Types" in table.stdout and "shell" in table.stdout


def test_idle_timeout_and_retention_days_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_IDLE_TIMEOUT", "0.25")
    monkeypatch.setenv("MAHAVISHNU_RETENTION_DAYS", "5")
    settings = Settings.load(home, enabled_task_types=["echo"], default_pool=False)
    assert (settings.idle_timeout_s, settings.retention_days) == (0.25, 5.0)


async def test_idle_workers_stop_after_the_idle_timeout(home: Path, gate: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_IDLE_TIMEOUT", "0.25")
    async with PoolManager(Settings.load(home, enabled_task_types=["python"], default_pool=False)) as m:
        await m.register(PoolConfig(name="idle", min_workers=1, max_workers=3))
        held = [await m.submit("idle", "python", {"target": "tests.helpers.tasks:wait_for_file", "args": [str(gate)]})
                for _ in range(3)]
        await wait_until(lambda: m.get_pool("idle").metrics.in_flight == 3, timeout=60,
                         what="the queue to grow the pool to three busy workers")
        gate.touch()
        for task in held:
            assert (await m.wait(task.task_id, 60)).state is TaskState.COMPLETED
        await wait_until(lambda: m.get_pool("idle").workers == 1, timeout=30, what="idle workers to stop")


async def test_retention_prunes_finished_tasks_older_than_retention_days(home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async with PoolManager(make_settings(home)) as m:
        await m.register(PoolConfig(name="r", min_workers=1, max_workers=1))
        old = await m.execute("r", "echo", {"old": True})
        new = await m.execute("r", "echo", {"old": False})
    with sqlite3.connect(make_settings(home).db_path) as db:
        long_ago = time.time() - 6 * 86400  # made, run and ended six days ago
        db.execute("UPDATE tasks SET created_at = ?, started_at = ?, finished_at = ? WHERE task_id = ?",
                   (long_ago, long_ago, long_ago, old.task_id))
    monkeypatch.setenv("MAHAVISHNU_RETENTION_DAYS", "5")
    async with PoolManager(make_settings(home)) as m:  # pruning runs at start (and hourly)
        assert m.get_task(new.task_id).state is TaskState.COMPLETED
        with pytest.raises(TaskNotFound, match="finished tasks are kept 5 days"):
            m.get_task(old.task_id)
        assert m.get_pool("r").metrics.tasks_completed == 2  # counters are history


def test_the_server_syncs_memory_periodically(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with peer(tmp_path / "peer") as (peer_url, _):
        write_settings(home, ("analyze", "echo"), extra=f"memory_endpoint: {peer_url}\nmemory_sync_interval_s: 0.2\n")
        with running_server(home):
            done = run_cli(home, "pools", "execute", "-t", "echo", "--payload", '{"marker": 1}', "-f", "json")
            task_id = json.loads(done.stdout)["task"]["task_id"]

            def on_the_peer() -> bool:
                reply = asyncio.run(PeerClient(peer_url).call("search_conversations", {"query": task_id}, 15))
                return any(r["metadata"].get("task_id") == task_id for r in reply.data["results"])

            wait_until_sync(on_the_peer, timeout=60, what="the periodic sync to push the task", interval=0.2)


async def test_a_peer_served_with_a_token_wants_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_settings(tmp_path / "peer", ("echo",), default_pool=False)
    with running_server(tmp_path / "peer", "--port", str(free_port()), "--token", "peer-s3cret-0123456789",
                        command=("peer", "serve")) as (url, _):
        async with PoolManager(settings_for(tmp_path / "without")) as m:  # refused before any tool
            with pytest.raises(PoolUnavailable, match="refused to list its tools with HTTP 401: it wants a bearer "
                                                      "token, and the operator has no credential bound"):
                await m.register(PoolConfig(name="nope", type=PoolType.SESSION_BUDDY, endpoint=url))
        monkeypatch.setenv("BUDDY_TOKEN", "not-the-peer-token-0123456789")
        async with PoolManager(settings_for(tmp_path / "wrong", credentials={
                "buddy": {"env": "BUDDY_TOKEN", "endpoints": [url]}})) as m:
            with pytest.raises(PoolUnavailable, match="HTTP 401: it did not accept the token of the operator's "
                                                      "credential bound to this endpoint"):
                await m.register(PoolConfig(name="wrong", type=PoolType.SESSION_BUDDY, endpoint=url))
        monkeypatch.setenv("BUDDY_TOKEN", "peer-s3cret-0123456789")  # a credential bound to the peer's endpoint
        async with PoolManager(settings_for(tmp_path / "with", credentials={
                "buddy": {"env": "BUDDY_TOKEN", "endpoints": [url]}})) as m:
            await m.register(PoolConfig(name="buddy", type=PoolType.SESSION_BUDDY, endpoint=url))
            assert (await m.execute("buddy", "echo", {"x": 1})).state is TaskState.COMPLETED


def test_serve_on_all_interfaces_with_a_token(home: Path) -> None:
    write_settings(home, ("echo",))
    with running_server(home, "--host", "0.0.0.0", "--token", "all-s3cret-0123456789") as (url, _):
        local = url.replace("0.0.0.0", "127.0.0.1")  # test traffic stays on loopback
        elsewhere = home.parent / "elsewhere"
        elsewhere.mkdir()
        refused = run_cli(elsewhere, "pools", "ping", MAHAVISHNU_URL=local)
        assert refused.returncode == 3 and "answered 401: it needs a token" in refused.stderr
        ok = run_cli(elsewhere, "pools", "ping", MAHAVISHNU_URL=local, MAHAVISHNU_TOKEN="all-s3cret-0123456789")
        assert ok.returncode == 0 and "✓ Server answered" in ok.stdout, ok.stderr


def test_an_entry_point_task_type(tmp_path: Path) -> None:
    """A package publishing a TaskType under `mahavishnu.task_types`, enabled by name."""
    site = tmp_path / "site"
    (site / "shout_tasks-1.0.dist-info").mkdir(parents=True)
    (site / "shout_tasks-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-tasks\n"
                                                                  "Version: 1.0\n")
    (site / "shout_tasks-1.0.dist-info" / "entry_points.txt").write_text(
        "[mahavishnu.task_types]\nshout = shout_tasks:Shout\n")
    (site / "shout_tasks.py").write_text(
        "from pydantic import BaseModel\nfrom pools.task_types.base import TaskType\n\n\n"
        "class Words(BaseModel):\n    text: str\n\n\n"
        "class Shout(TaskType):\n    name = 'shout'\n    description = 'Upper-case the text.'\n"
        "    payload_model = Words\n\n    def run(self, payload, context):\n"
        "        return {'text': payload['text'].upper()}\n\n    def summarize(self, result):\n"
        "        return result['text']\n")
    home = tmp_path / "home"
    write_settings(home, ("echo",))
    env = {"PYTHONPATH": f"{ROOT}:{site}"}
    listed = json.loads(run_cli(home, "pools", "task-types", "-f", "json", **env).stdout)["task_types"]
    assert {"name": "shout", "enabled": False} in [{k: t[k] for k in ("name", "enabled")} for t in listed]
    off = run_cli(home, "pools", "execute", "-t", "shout", "--payload", '{"text": "hi"}', **env)
    assert off.returncode == 2 and "task type 'shout' is disabled" in off.stderr
    done = run_cli(home, "pools", "execute", "-t", "shout", "--payload", '{"text": "hi"}',
                   MAHAVISHNU_ENABLE_TASK_TYPES="shout", **env)
    assert done.returncode == 0 and "Output: HI" in done.stdout, done.stderr


def test_cli_commands_people_reach_for_first(tmp_path: Path) -> None:
    """list --active-only, tasks with its filters, --pool-filter, --affinity-key, against a peer that goes
    away (its pool fails and drops out of the active list)."""
    home = tmp_path / "home"
    write_settings(home, ("analyze", "echo"), extra="peer_health_interval_s: 0.2\n")
    with running_server(home):
        with peer(tmp_path / "peer") as (peer_url, peer_proc):
            reg = run_cli(home, "pools", "register", "-n", "buddy", "-t", "session-buddy", "--endpoint", peer_url)
            assert reg.returncode == 0, reg.stderr
            spread = run_cli(home, "pools", "distribute", "-t", "echo", "--payload", '{"items": [1, 2, 3]}',
                             "-s", "broadcast", "--pool-filter", "session-buddy", "-f", "json")
            assert {s["pool_name"] for s in json.loads(spread.stdout)["shards"]} == {"buddy"}
            chosen = [json.loads(run_cli(home, "pools", "execute", "--auto-route", "--strategy", "affinity",
                                         "--affinity-key", "user-7", "-t", "echo", "-f", "json").stdout)["pool_name"]
                      for _ in range(3)]
            assert len(set(chosen)) == 1, chosen
            peer_proc.kill()
        def failed() -> str:
            got = run_cli(home, "pools", "get", "buddy", "-f", "json")
            assert got.returncode == 0, got.stderr
            return str(json.loads(got.stdout)["status"])

        wait_until_sync(lambda: failed() == "failed", timeout=60, what="the peer's pool to fail", interval=0.2)
        def names(*flags: str) -> set[str]:
            listed = run_cli(home, "pools", "list", "-f", "json", *flags)
            assert listed.returncode == 0, listed.stderr
            return {p["name"] for p in json.loads(listed.stdout)["pools"]}

        assert names() == {"default", "buddy"} and names("--active-only") == {"default"}
        tasks = json.loads(run_cli(home, "pools", "tasks", "-p", "buddy", "--state", "completed", "--task-type", "echo",
                                   "-f", "json").stdout)["tasks"]
        assert tasks and all(t["task_type"] == "echo" and t["state"] == "completed" for t in tasks)
        assert len({t["pool_id"] for t in tasks}) == 1


async def test_a_peer_that_stops_answering_is_degraded_then_failed_then_running_again(tmp_path: Path) -> None:
    port = free_port()
    with peer(tmp_path / "p", port) as (url, proc):
        settings = settings_for(tmp_path / "main").model_copy(update={"peer_health_interval_s": 1.0})
        async with PoolManager(settings) as m:
            await m.register(PoolConfig(name="buddy", type=PoolType.SESSION_BUDDY, endpoint=url))
            proc.kill()
            proc.wait()
            seen: list[PoolStatus] = []

            def status(expected: PoolStatus) -> bool:
                info = m.get_pool("buddy")
                if not seen or seen[-1] is not info.status:
                    seen.append(info.status)
                return info.status is expected

            await wait_until(lambda: status(PoolStatus.DEGRADED), timeout=30, what="the first failed probe")
            assert "peer not answering" in (m.get_pool("buddy").status_reason or "")
            assert not m.health("buddy").pools[0].healthy and m.list_pools(active_only=True) == []
            await wait_until(lambda: status(PoolStatus.FAILED), timeout=30, what="three failed probes")
            assert seen[-2:] == [PoolStatus.DEGRADED, PoolStatus.FAILED]
            with peer(tmp_path / "p", port):  # back on the same address: the pool is made again
                await wait_until(lambda: status(PoolStatus.RUNNING), timeout=60, what="the peer to be back")
                assert (await m.execute("buddy", "echo", {})).state is TaskState.COMPLETED
