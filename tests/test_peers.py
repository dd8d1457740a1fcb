"""Session-Buddy pools: real peer subprocesses on loopback, our own and a text-only one."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pools.errors import PoolUnavailable
from pools.manager import PoolManager
from pools.models import DistributionStrategy, PoolConfig, PoolStatus, PoolType, TaskState
from tests.conftest import make_settings
from tests.helpers.ports import free_port
from tests.helpers.server import ROOT, cli_env, running_server, write_settings
from tests.helpers.waiting import gone, wait_until, wait_until_sync

GATE = "task_type_refs: {gate: 'tests.helpers.gate_type:GateTask'}\n"
PEER_TYPES = ("analyze", "echo", "gate")


@contextmanager
def peer(home: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    write_settings(home, PEER_TYPES, default_pool=False, extra=GATE)
    with running_server(home, "--port", str(port or free_port()), command=("peer", "serve")) as running:
        yield running


@contextmanager
def text_peer(*flags: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.text_peer", str(port), *flags], cwd=ROOT,
                            env=cli_env(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_until_sync(lambda: _listening(port), what="the text peer to listen")
        yield url
    finally:
        proc.kill()
        proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def settings_for(home: Path, **extra: object):  # type: ignore[no-untyped-def]
    return make_settings(home, enabled_task_types=["analyze", "echo", "gate"], task_type_refs={
        "gate": "tests.helpers.gate_type:GateTask"}, peer_health_interval_s=0.2, **extra)


async def test_two_peers_beside_a_local_pool(tmp_path: Path) -> None:
    with peer(tmp_path / "p1") as (url1, _), peer(tmp_path / "p2") as (url2, _):
        async with PoolManager(settings_for(tmp_path / "main")) as m:
            await m.register(PoolConfig(name="local", min_workers=1, max_workers=2))
            b1 = await m.register(PoolConfig(name="buddy1", type=PoolType.SESSION_BUDDY, endpoint=url1))
            await m.register(PoolConfig(name="buddy2", type=PoolType.SESSION_BUDDY, endpoint=url2))
            assert b1.workers == 3 and (b1.min_workers, b1.max_workers) == (3, 3)
            assert b1.status is PoolStatus.RUNNING and len(m.get_pool("buddy1").worker_details) == 3

            done = await m.execute("buddy1", "analyze", {"sources": {"a.py": "import os\n"}})
            assert done.state is TaskState.COMPLETED and done.result["count"] == 1
            assert done.worker_id and done.worker_id.startswith("buddy1/")

            out = await m.distribute("echo", {"items": list(range(30))}, DistributionStrategy.MAP_REDUCE)
            assert out.failed == 0 and out.result["count"] == 30
            assert {s.pool_name for s in out.shards} == {"local", "buddy1", "buddy2"}
            wide = await m.distribute("echo", {"items": [1]}, DistributionStrategy.BROADCAST)
            assert sorted(s.pool_name for s in wide.shards) == ["buddy1", "buddy2", "local"]

            bad = await m.execute("buddy2", "analyze", {"file": "no-such-dir/x.py"})
            assert bad.state is TaskState.FAILED and not bad.pool_fault  # the task's fault, not the peer's
            assert "no such file or directory on the worker" in (bad.error or "")


async def test_a_peer_killed_mid_run_then_restarted(tmp_path: Path, gate: Path) -> None:
    port = free_port()
    async with PoolManager(settings_for(tmp_path / "main")) as m:
        await m.register(PoolConfig(name="local", min_workers=1, max_workers=4))
        with peer(tmp_path / "p1", port) as (url, proc):
            await m.register(PoolConfig(name="buddy", type=PoolType.SESSION_BUDDY, endpoint=url))
            run = asyncio.ensure_future(m.distribute("gate", {"gate": str(gate), "items": [1, 2, 3, 4]},
                                                     DistributionStrategy.ROUND_ROBIN))
            await wait_until(lambda: len(list(gate.parent.glob("gate.started.*"))) == 4, what="shards to start")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            await wait_until(lambda: len(list(gate.parent.glob("gate.started.*"))) == 6,
                             what="the peer's shards to restart on the local pool")
            gate.touch()
            out = await asyncio.wait_for(run, 60)
            assert (out.total, out.successful, out.failed, out.retried) == (4, 4, 0, 2)
            assert all(s.pool_name == "local" for s in out.shards if s.retried_from)
            await wait_until(lambda: m.get_pool("buddy").status is PoolStatus.FAILED, what="the pool to fail")
            assert "unreachable" in (m.get_pool("buddy").status_reason or "")
            assert m.route("echo").pool_name == "local"  # never routed to the failed peer
            # asked for by name, the failed pool answers at once with its state and reason
            with pytest.raises(PoolUnavailable, match=r"pool 'buddy' is failed \(peer unreachable"):
                await m.execute("buddy", "echo", {"items": [1]}, wait=300)
        with peer(tmp_path / "p1", port):
            await wait_until(lambda: m.get_pool("buddy").status is PoolStatus.RUNNING, what="the peer to come back")
            again = await m.execute("buddy", "echo", {"items": [7]})
            assert again.state is TaskState.COMPLETED and again.result["count"] == 1


async def test_cancel_reaches_the_peer(tmp_path: Path, gate: Path) -> None:
    with peer(tmp_path / "p1") as (url, _):
        async with PoolManager(settings_for(tmp_path / "main")) as m:
            await m.register(PoolConfig(name="buddy", type=PoolType.SESSION_BUDDY, endpoint=url))
            task = await m.submit("buddy", "gate", {"gate": str(gate), "items": [5]})
            await wait_until(lambda: len(list(gate.parent.glob("gate.started.*"))) == 1, what="the task to start")
            pid = int(next(gate.parent.glob("gate.started.*")).name.split(".")[2])
            cancelled = await m.cancel(task.task_id)
            assert cancelled.state is TaskState.CANCELLED
            # the peer killed the worker running it (and started a replacement)
            await wait_until(lambda: gone(pid), what="the peer's worker to be stopped")


async def test_discovery_from_a_file_with_a_healthy_and_a_dead_peer(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    with peer(tmp_path / "p1") as (url, _):
        home = tmp_path / "main"
        home.mkdir()
        (home / "ecosystem.yaml").write_text(
            f"peers:\n  - name: alive\n    endpoint: {url}\n  - name: gone\n    endpoint: {dead}\n"
            "kubernetes:\n  - name: cluster\n    namespace: jobs\n")
        async with PoolManager(settings_for(home)) as m:
            from pools.discovery import discover

            looked = await discover(m, None, use_file=True, auto_register=False)
            by_name = {f.name: f for f in looked.found}
            assert by_name["alive"].healthy and not by_name["alive"].registered
            assert not by_name["gone"].healthy and "GET /health failed" in by_name["gone"].detail
            assert by_name["cluster"].kind == "kubernetes" and not by_name["cluster"].healthy
            assert m.list_pools() == []
            done = await discover(m, None, use_file=True, auto_register=True)
            assert done.registered_now == 1 and [p.name for p in m.list_pools()] == ["alive"]
            again = await discover(m, None, use_file=True, auto_register=True)
            assert again.registered_now == 0 and {f.action for f in again.found if f.name == "alive"} == {
                "already registered"}


async def test_memory_sync_then_search_with_one_peer_down(tmp_path: Path) -> None:
    from pools import aggregator

    with peer(tmp_path / "p1") as (url1, _), peer(tmp_path / "p2") as (url2, proc2):
        async with PoolManager(settings_for(tmp_path / "main", memory_endpoint=url1)) as m:
            await m.register(PoolConfig(name="local", min_workers=1, max_workers=1))
            await m.register(PoolConfig(name="buddy1", type=PoolType.SESSION_BUDDY, endpoint=url1))
            await m.register(PoolConfig(name="buddy2", type=PoolType.SESSION_BUDDY, endpoint=url2))
            for i in range(3):
                await m.execute("local", "analyze", {"sources": {f"api_{i}.py": "import os\n"}})
            first = await aggregator.sync(m, batch_size=2)
            assert first.error is None and first.pushed == 3 and first.remaining == 0 and first.batches == 2
            assert first.method == "store_conversation"
            repeat = await aggregator.sync(m)
            assert repeat.pushed == 0  # idempotent: nothing left to push
            proc2.send_signal(signal.SIGKILL)
            proc2.wait()
            found = await aggregator.search(m, "analyze issues")
            assert found.unreachable == ["buddy2"]
            assert {s.source: s.ok for s in found.sources} == {"local": True, "buddy1": True, "buddy2": False}
            assert len([h for h in found.results if h.source == "local"]) == 3
            # the synced copies on buddy1 are the same tasks: not listed twice
            assert len({h.task_id for h in found.results}) == len(found.results)
            nothing = await aggregator.search(m, "zebra")
            assert nothing.results == [] and nothing.unreachable == ["buddy2"]


async def test_a_text_only_peer_works_like_the_released_session_buddy(tmp_path: Path) -> None:
    from pools import aggregator

    with text_peer("--pool-tools") as url:  # a Session-Buddy built with its pool tools registered
        async with PoolManager(settings_for(tmp_path / "main", memory_endpoint=url)) as m:
            await m.register(PoolConfig(name="prose", type=PoolType.SESSION_BUDDY, endpoint=url))
            assert m.get_pool("prose").workers == 3
            done = await m.execute("prose", "echo", {"items": [1]})
            assert done.state is TaskState.COMPLETED
            assert done.result["output"].startswith("Worker echo: echo task task_")
            pushed = await aggregator.sync(m)
            assert pushed.method == "store_reflection" and pushed.pushed == 1 and pushed.error is None
            found = await aggregator.search(m, "echo")
            assert any(h.source == "prose" and "[mahavishnu] echo task" in h.text for h in found.results)
            assert found.unreachable == []


async def test_registering_a_peer_without_pool_tools_names_them(tmp_path: Path) -> None:
    with text_peer() as url:  # as released: no pool tools
        async with PoolManager(settings_for(tmp_path / "main")) as m:
            with pytest.raises(PoolUnavailable) as info:
                await m.register(PoolConfig(name="old", type=PoolType.SESSION_BUDDY, endpoint=url))
            assert "lacks the pool tools create_pool, execute_on_pool, get_pool_status" in str(info.value)
            assert m.list_pools() == []


def test_peer_health_paths_and_token_rule(tmp_path: Path) -> None:
    import json
    import urllib.request

    from tests.helpers.server import run_cli

    with peer(tmp_path / "p1") as (url, _):
        base = url.removesuffix("/mcp")
        for path in ("/health", "/healthz", "/mcp/health"):
            with urllib.request.urlopen(base + path, timeout=10) as r:
                assert json.loads(r.read())["status"] == "ok"
    refused = run_cli(tmp_path / "p2", "peer", "serve", "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 2 and "without a token" in refused.stderr


def test_cli_discover_register_and_memory_commands(tmp_path: Path) -> None:
    import json

    from tests.helpers.server import run_cli

    with peer(tmp_path / "p1") as (url, _):
        home = tmp_path / "main"
        write_settings(home, ("analyze", "echo"), default_pool=True, extra=f"memory_endpoint: {url}\n")
        (home / "ecosystem.yaml").write_text(f"peers:\n  - name: buddy\n    endpoint: {url}\n")
        found = run_cli(home, "pools", "discover", "--from-ecosystem", "--auto-register")
        assert found.returncode == 0, found.stderr
        assert "● buddy (session-buddy" in found.stdout and "registered now" in found.stdout
        listed = json.loads(run_cli(home, "pools", "list", "--by-type", "session-buddy", "-f", "json").stdout)
        assert [p["name"] for p in listed["pools"]] == ["buddy"]
        ran = run_cli(home, "pools", "execute", "-p", "buddy", "-t", "analyze",
                      "--payload", json.dumps({"sources": {"peer_api.py": "import json\n"}}))
        assert ran.returncode == 0 and "Analysis complete: 1 issues found" in ran.stdout, ran.stdout + ran.stderr
        synced = run_cli(home, "pools", "memory", "sync")
        assert synced.returncode == 0 and "Pushed: 1" in synced.stdout, synced.stdout + synced.stderr
        searched = run_cli(home, "pools", "memory", "search", "analyze", "-f", "json")
        report = json.loads(searched.stdout)
        assert {s["source"] for s in report["sources"]} == {"local", "buddy"} and report["unreachable"] == []
        assert any(h["source"] == "local" for h in report["results"])
