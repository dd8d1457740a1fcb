"""Lifecycle of `mahavishnu serve` as an operator sees it: acknowledged work survives kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.helpers.census import orphans, zombies
from tests.helpers.server import ROOT, cli_env, run_cli, running_server, start_server, write_settings
from tests.helpers.waiting import gone, started_markers, wait_until_sync

# How many times each kill-at-ack loop kills a server; the issue's own measurement used 20 and 10.
TRIES = int(os.environ.get("MAHAVISHNU_KILL_TRIES", "5"))


def stored_ids(home: Path, ids: list[str]) -> set[str]:
    """What a restarted server would find: the committed rows of the database file."""
    db = sqlite3.connect(home / "mahavishnu.db")
    try:
        marks = ",".join("?" * len(ids))
        return {row[0] for row in db.execute(f"SELECT task_id FROM tasks WHERE task_id IN ({marks})", ids)}
    finally:
        db.close()


def tools_call(port: int, request_id: int, tool: str, arguments: dict[str, Any]) -> bytes:
    """One stateless (2026-07-28) MCP tools/call as raw HTTP: no client library between the
    reply's last byte and the kill."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "kill-at-ack", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}}
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments, "_meta": meta}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Type: application/json\r\nMcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
            f"Mcp-Name: {tool}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    reply: dict[str, Any] = json.loads(await reader.readexactly(length))
    return reply


async def execute_then_kill(url: str, pid: int, in_flight: int) -> list[str]:
    """Send `in_flight` no-wait executes at once; SIGKILL the server the moment the first reply
    has arrived. Returns every task id acknowledged by then."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    acked: list[str] = []
    killed = asyncio.Event()

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(tools_call(port, i, "pools_execute", {"task_type": "echo", "payload": {"i": i},
                                                                "wait": False}))
            reply = await read_reply(reader)
            if killed.is_set():
                return
            os.kill(pid, signal.SIGKILL)
            killed.set()
            result = reply["result"]
            assert not result.get("isError"), result
            acked.append(result["structuredContent"]["task"]["task_id"])
        finally:
            writer.close()

    calls = [asyncio.ensure_future(one(i)) for i in range(in_flight)]
    await asyncio.wait_for(killed.wait(), 60)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, AssertionError)]
    assert not errors, errors
    return acked


@pytest.mark.parametrize("in_flight", [1, 8], ids=["serial", "concurrent"])
def test_kill_at_ack_loses_no_acknowledged_id(home: Path, in_flight: int) -> None:
    write_settings(home, enabled=("echo",))
    acked: list[str] = []
    for _ in range(TRIES):
        with running_server(home) as (url, proc):
            got = asyncio.run(execute_then_kill(url, proc.pid, in_flight))
            assert got, "no reply arrived before the kill"
            acked += got
            proc.wait(30)
            assert proc.returncode == -signal.SIGKILL
    lost = set(acked) - stored_ids(home, acked)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged ids were lost: {sorted(lost)[:3]}"


def test_acknowledged_ids_are_reconciled_after_the_kill(home: Path) -> None:
    """The restarted server knows each acknowledged task and runs it (echo is idempotent)."""
    write_settings(home, enabled=("echo",))
    with running_server(home) as (url, proc):
        acked = asyncio.run(execute_then_kill(url, proc.pid, 4))
        proc.wait(30)

    async def states(url: str) -> list[Any]:
        async with Client(url) as client:
            out = []
            for task_id in acked:
                for _ in range(600):
                    task = (await client.call_tool("pools_task", {"task_id": task_id})).structured_content
                    if task["state"] in ("completed", "failed"):
                        break
                    await asyncio.sleep(0.05)
                out.append(task)
            return out

    with running_server(home) as (url, _):
        tasks = asyncio.run(states(url))
    assert [t["state"] for t in tasks] == ["completed"] * len(acked), tasks


async def call(url: str, tool: str, arguments: dict[str, Any]) -> Any:
    async with Client(url) as client:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
        return result.structured_content


@pytest.mark.parametrize("target", ["daemon_then_wait", "hold_the_gil"])
def test_nothing_outlives_a_server_killed_with_sigkill(home: Path, tmp_path: Path, target: str) -> None:
    """A task that started a daemon, or one stuck in C code holding the GIL (where no thread of
    the worker can run), ends with its server: the kernel tells the keeper, the keeper kills."""
    write_settings(home, enabled=("echo", "python"))
    marker, gate = tmp_path / "started", tmp_path / "gate"
    args = [str(marker)] if target == "hold_the_gil" else [str(marker), str(gate)]
    with running_server(home) as (url, proc):
        asyncio.run(call(url, "pools_execute", {"task_type": "python", "wait": False, "payload": {
            "target": f"tests.helpers.tasks:{target}", "args": args}}))
        wait_until_sync(lambda: marker.exists() and bool(marker.read_text()), what="the task to start")
        assert orphans(proc.pid), "the census does not see the server's workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    started = int(marker.read_text())  # the worker holding the GIL, or the daemon
    wait_until_sync(lambda: gone(started), what=f"process {started} to end with its server")
    wait_until_sync(lambda: not orphans(proc.pid), what=f"no orphans after SIGKILL: {orphans(proc.pid)}")


def test_sigterm_is_a_clean_stop(home: Path, tmp_path: Path) -> None:
    """Exit 0, server.json gone, no process left; a task that finishes within the grace period is
    kept, one that does not is reconciled at the next start with the reason."""
    write_settings(home, enabled=("echo", "python"), default_pool=False)
    quick, slow = tmp_path / "quick", tmp_path / "slow"
    url, proc = start_server(home, "--grace", "3")
    try:
        asyncio.run(call(url, "pools_register", {"name": "two", "min_workers": 2, "max_workers": 2}))
        ids = {}
        for name, gate in (("quick", quick), ("slow", slow)):
            out = asyncio.run(call(url, "pools_execute", {"pool": "two", "task_type": "python", "wait": False,
                                                          "payload": {
                "target": "tests.helpers.tasks:wait_for_file", "args": [str(gate)]}}))
            ids[name] = out["task"]["task_id"]
        wait_until_sync(lambda: len(started_markers(quick)) == len(started_markers(slow)) == 1,
                        what="both tasks to start")
        proc.send_signal(signal.SIGTERM)
        wait_until_sync(lambda: not (home / "server.json").exists(), what="server.json to go at the signal")
        quick.touch()  # finishes during the grace period
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert not orphans(proc.pid) and not zombies(proc.pid)
    db = sqlite3.connect(home / "mahavishnu.db")
    states = dict(db.execute("SELECT task_id, state FROM tasks").fetchall())
    db.close()
    assert states[ids["quick"]] == "completed"
    assert states[ids["slow"]] == "running"  # left for the next start
    slow.touch()
    with running_server(home) as (url, _):
        task = asyncio.run(call(url, "pools_task", {"task_id": ids["slow"]}))
    # the python type is not idempotent: the next start fails it, saying why
    assert task["state"] == "failed"
    assert task["error"].startswith("the server stopped (SIGTERM, grace 3s) while it ran; ")


def test_stdio_server_stops_cleanly_on_sigterm(home: Path) -> None:
    write_settings(home, enabled=("echo",))
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--stdio"], cwd=ROOT,
                            env=cli_env(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_until_sync(lambda: bool(orphans(proc.pid)), what="the default pool's worker to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    assert not orphans(proc.pid) and not zombies(proc.pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_peer_serve_stops_cleanly(home: Path, sig: signal.Signals) -> None:
    url, proc = start_server(home, command=("peer", "serve"))
    try:
        asyncio.run(call(url, "create_pool", {"pool_id": "p1"}))
        workers = orphans(proc.pid)
        assert workers
        proc.send_signal(sig)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    assert not orphans(proc.pid) and not zombies(proc.pid)


def test_no_zombies_or_orphans_after_churn(home: Path, tmp_path: Path) -> None:
    """Scale up and down, time out, crash and idle-reap workers over and over on one server."""
    write_settings(home, enabled=("echo", "python"), default_pool=False, extra="idle_timeout_s: 0.2\n")
    url, proc = start_server(home)

    async def churn() -> None:
        async with Client(url) as client:
            async def ok(tool: str, args: dict[str, Any]) -> Any:
                result = await client.call_tool(tool, args)
                assert not result.is_error, result.content
                return result.structured_content

            await ok("pools_register", {"name": "churn", "min_workers": 0, "max_workers": 3})
            for round_ in range(4):
                await ok("pools_scale", {"pool": "churn", "target": 3})
                await ok("pools_scale", {"pool": "churn", "target": 0})
                burst = [ok("pools_execute", {"pool": "churn", "task_type": "python", "timeout": 0.5, "payload": {
                    "target": "tests.helpers.tasks:wait_for_file", "args": [str(tmp_path / "never")]}}),
                         ok("pools_execute", {"pool": "churn", "task_type": "python", "payload": {
                             "target": "tests.helpers.tasks:exit_now", "args": [3]}}),
                         ok("pools_execute", {"pool": "churn", "task_type": "python", "payload": {
                             "target": "tests.helpers.tasks:leave_setsid_child",
                             "args": [str(tmp_path / f"child{round_}")]}})]
                await asyncio.gather(*burst)
                # idle: the pool shrinks to no worker at all
                for _ in range(1000):
                    if (await ok("pools_get", {"pool": "churn"}))["workers"] == 0:
                        break
                    await asyncio.sleep(0.05)

    try:
        asyncio.run(churn())
        wait_until_sync(lambda: not zombies(proc.pid), what=f"no zombie children: {zombies(proc.pid)}")
        wait_until_sync(lambda: not orphans(proc.pid), what=f"no orphans: {orphans(proc.pid)}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()


def test_a_busy_state_directory_names_its_owner(home: Path, tmp_path: Path) -> None:
    """An embedded command finds another command owning the state directory: it says which
    process, since when, and what to do, without waiting for it."""
    write_settings(home, enabled=("echo", "python"))
    gate = tmp_path / "gate"
    first = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "pools", "execute", "-t", "python",
                              "--payload", json.dumps({"target": "tests.helpers.tasks:wait_for_file",
                                                       "args": [str(gate)]})],
                             cwd=ROOT, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_sync(lambda: bool(started_markers(gate)), what="the first command's task to start")
        second = run_cli(home, "pools", "list")
        assert second.returncode == 3, second.stderr
        since = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
        assert re.fullmatch(
            rf"Error: another mahavishnu process \(pid {first.pid}, `\S+python\S* \S+cli.py pools execute -t python "
            rf"--payload .*`, since {since}\) owns the state directory {re.escape(str(home))}; "
            rf"wait for it to finish, stop it \(kill {first.pid}\), or set MAHAVISHNU_HOME to another directory\n",
            second.stderr), second.stderr
    finally:
        gate.touch()
        first.wait(60)
    assert first.returncode == 0


@pytest.mark.parametrize(("settings", "env", "expected"), [
    ("idle_timeout_s: [1,\n", {}, "{file}:2:1: not valid YAML: expected the node content, but found '<stream end>'"),
    ("idle_timout_s: 3\n", {}, "{file}: unknown setting 'idle_timout_s'; did you mean 'idle_timeout_s'?"),
    ("- echo\n", {}, "{file}: must be a mapping of setting names to values, not a list"),
    ("retention_days: 0\n", {}, "{file}: retention_days: Input should be greater than 0"),
    ("", {"MAHAVISHNU_IDLE_TIMEOUT": "abc"},
     "MAHAVISHNU_IDLE_TIMEOUT='abc': idle_timeout_s: Input should be a valid number, unable to parse string as a "
     "number"),
], ids=["malformed", "unknown-key", "not-a-mapping", "out-of-range", "environment"])
@pytest.mark.parametrize("command", [("serve",), ("pools", "list")], ids=["serve", "pools-list"])
def test_configuration_errors_are_one_line(home: Path, settings: str, env: dict[str, str], expected: str,
                                           command: tuple[str, ...]) -> None:
    (home / "settings.yaml").write_text(settings)
    out = run_cli(home, *command, "--port", "0", **env) if command == ("serve",) else run_cli(home, *command, **env)
    assert out.returncode == 2
    assert out.stderr == "Error: " + expected.format(file=home / "settings.yaml") + "\n"
    assert not (home / "server.json").exists()


def test_a_busy_port_is_one_line_and_exit_3(home: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(home, "serve", "--port", str(port))
    assert out.returncode == 3
    assert out.stderr == (f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another "
                          "--port or stop what uses it\n")
    assert not (home / "owner.lock").exists()  # refused before the state directory was taken


def test_the_listening_socket_is_one_asyncio_gives_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY on accepted connections only for sockets made with proto
    IPPROTO_TCP; without it each small response waited for a delayed ACK (~40 ms a call)."""
    import asyncio as aio

    from mcp_server.http import listen

    sock = listen("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP

    async def accepted_nodelay() -> int:
        seen: aio.Future[int] = aio.get_running_loop().create_future()

        def on_connect(reader: aio.StreamReader, writer: aio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await aio.start_server(on_connect, sock=sock)
        _, writer = await aio.open_connection(*sock.getsockname())
        value = await aio.wait_for(seen, 30)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
