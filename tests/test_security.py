"""The trust boundary (SECURITY.md), tried as an attacker would: every tool argument is untrusted.

An attacker's listener on 127.0.0.1 records every request the server makes; decoy secrets lie
outside the file roots; device files, FIFOs and directories go to every path input; every limit
is tried at limit+1; file modes are checked under umask 022. The client-facing tests run over
HTTP (a `serve --token` subprocess) and over stdio.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ListRootsResult, Root

from pools.errors import LimitExceeded, PoolUnavailable
from pools.manager import PoolManager
from pools.models import PoolConfig, TaskOptions, TaskState
from tests.conftest import make_settings
from tests.helpers.server import ROOT, cli_env, running_server, write_settings

SERVER_TOKEN = "server-token-0123456789abcdef"
BOUND_SECRET = "bound-secret-5b9a7c1e3d"  # a credential bound to an endpoint nobody else may get it at
DECOY = "sk_live_DECOY_4242"  # in files outside the roots


# -- the attacker ----------------------------------------------------------------------------------
class Recorder:
    """An HTTP listener on 127.0.0.1 that records every request (line, headers, body) and answers
    /health with 200 and everything else with 404."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                recorder.requests.append(f"{self.command} {self.path}\n{self.headers}\n{body}")
                if redirect_to:
                    self.send_response(302)
                    self.send_header("location", redirect_to + self.path)
                    self.end_headers()
                    return
                ok = self.path.endswith("/health")
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}' if ok else b"{}")

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _record  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


class Holder:
    """Accepts connections and never answers, until the client gives up (a probe that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        self.accepted = threading.Event()
        self.holding = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        self.holding.set()
        self.accepted.set()
        with conn:
            while conn.recv(65536):  # until the client closes its end
                pass
        self.holding.clear()

    def close(self) -> None:
        self.sock.close()


# -- a client of a real server, over HTTP or stdio -----------------------------------------------------
def settings_yaml(extra: str = "") -> str:
    return ("credentials:\n"
            "  good: {env: BOUND_SECRET, endpoints: ['http://127.0.0.1:1/only-here/']}\n"
            f"{extra}")


@asynccontextmanager
async def client_of(kind: str, home: Path, project: Path, roots: list[Path] | None = None) -> AsyncIterator[Any]:
    """A client of a server whose working directory (its file root) is `project`."""
    env = {"BOUND_SECRET": BOUND_SECRET}
    if kind == "http":
        with running_server(home, "--token", SERVER_TOKEN, MAHAVISHNU_TOKEN=SERVER_TOKEN, **env) as (url, _):
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {SERVER_TOKEN}"},
                                      timeout=httpx2.Timeout(60.0))
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                client.base_url = url.removesuffix("/mcp")
                yield client
        return
    params = StdioServerParameters(command=sys.executable, args=[str(ROOT / "cli.py"), "serve", "--stdio"],
                                   env=cli_env(home, **env), cwd=str(project))
    callback = None
    if roots is not None:
        async def callback(context: Any) -> ListRootsResult:
            return ListRootsResult(roots=[Root(uri=r.as_uri()) for r in roots])  # type: ignore[arg-type]
    # Roots are a handshake-protocol feature (the 2026-07-28 protocol deprecates them): a client that
    # declares roots speaks it, as IDE hosts do.
    async with Client(params, list_roots_callback=callback, mode="legacy" if roots is not None else "auto") as client:
        client.base_url = None
        yield client


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content) + json.dumps(result.structured_content or {})


def error_of(result: Any) -> dict[str, Any]:
    assert result.is_error, text_of(result)
    error: dict[str, Any] = json.loads(result.content[0].text)["error"]
    return error


def healthz_ms(base: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(base + "/healthz", timeout=30) as response:
        assert response.status == 200
    return (time.perf_counter() - began) * 1000


@pytest.fixture
def project(home: Path) -> Path:
    """The server's working directory (the file root): the test's directory, as running_server uses."""
    return home.parent


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Decoy secrets in a directory outside the roots."""
    path = tmp_path_factory.mktemp("outside")
    (path / "secret.py").write_text(f"print({DECOY})\n")
    (path / ".env").write_text(f"STRIPE_KEY={DECOY}\n")
    (path / "eco.yaml").write_text(f"peers:\n  - name: x\n    endpoint: {DECOY}\n")
    return path


TRANSPORTS = pytest.mark.parametrize("kind", ["http", "stdio"])


# -- 1. no sequence of tool calls delivers a secret -------------------------------------------------------
@TRANSPORTS
async def test_no_tool_call_sends_a_secret_anywhere(kind: str, home: Path, project: Path, attacker: Recorder,
                                                    outside: Path) -> None:
    write_settings(home, extra=settings_yaml())
    peer = attacker.url + "/mcp"
    eco = project / "eco.yaml"
    eco.write_text(f"peers:\n  - name: a\n    endpoint: {peer}\n    credential: good\n"
                   f"  - name: b\n    endpoint: {peer}\n"
                   f"kubernetes:\n  - name: k\n    endpoint: {attacker.url}\n    credential: good\n"
                   f"  - name: k2\n    endpoint: {attacker.url}\n")
    async with client_of(kind, home, project) as client:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("pools_register", {"name": "p1", "type": "session-buddy", "endpoint": peer}),
            ("pools_register", {"name": "p2", "type": "session-buddy", "endpoint": peer, "credential": "good"}),
            ("pools_register", {"name": "p3", "type": "session-buddy", "endpoint": peer,
                                "labels": {"token_env": "BOUND_SECRET"}}),
            ("pools_register", {"name": "p4", "type": "session-buddy", "endpoint": peer,
                                "labels": {"token_env": "MAHAVISHNU_TOKEN"}}),
            ("pools_register", {"name": "k1", "type": "kubernetes", "endpoint": attacker.url, "credential": "good"}),
            ("pools_register", {"name": "k2", "type": "kubernetes", "endpoint": attacker.url}),
            ("pools_register", {"name": "k3", "type": "kubernetes", "endpoint": attacker.url,
                                "api_token_env": "BOUND_SECRET"}),
            ("pools_register", {"name": "k4", "type": "kubernetes", "kube_context": "prod"}),
            ("pools_register", {"name": "k5", "type": "kubernetes", "kubeconfig": str(outside / ".env")}),
            ("pools_register", {"name": "w", "type": "kubernetes", "warm": True, "endpoint": attacker.url,
                                "labels": {"warm_endpoint": peer}}),
            ("pools_memory_sync", {"endpoint": peer}),
            ("pools_memory_sync", {"endpoint": attacker.url + "/only-here/../mcp"}),
            ("pools_discover", {"ecosystem_file": str(eco), "auto_register": True}),
            ("pools_discover", {"from_ecosystem": False}),
            ("pools_scale", {"pool": "default", "target": 1}),
            ("pools_memory_search", {"query": "anything"}),
            ("pools_credentials", {}),
        ]
        answers = [text_of(await client.call_tool(tool, args)) for tool, args in calls]
    assert attacker.requests, "the attacker's listener saw no request: the test proves nothing"
    for secret in (BOUND_SECRET, SERVER_TOKEN, DECOY):
        assert not [r for r in attacker.requests if secret in r], secret
        assert not [a for a in answers if secret in a], secret  # nor does any answer show one
    assert not [r for r in attacker.requests if "authorization" in r.lower()]


async def test_a_bound_credential_is_sent_only_where_it_is_bound(home: Path, attacker: Recorder) -> None:
    os.environ["BOUND_SECRET"] = BOUND_SECRET
    settings = make_settings(home, credentials={"good": {"env": "BOUND_SECRET",
                                                         "endpoints": [attacker.url + "/bound/"]}})
    async with PoolManager(settings) as m:
        assert await m.peer_access(attacker.url + "/bound/mcp") == BOUND_SECRET  # auto: bound here
        assert await m.peer_access(attacker.url + "/bound/mcp", "good") == BOUND_SECRET
        assert await m.peer_access(attacker.url + "/boundless/mcp") is None
        for url in (attacker.url + "/boundless/mcp", attacker.url.replace("127.0.0.1", "localhost") + "/bound/",
                    "http://127.0.0.1:1/bound/"):
            with pytest.raises(Exception, match="not bound") as info:
                await m.peer_access(url, "good")
            assert info.value.field == "credential"  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="link-local or cloud-metadata"):
            await m.peer_access("http://169.254.169.254/latest/meta-data/")
        with pytest.raises(Exception, match="link-local or cloud-metadata"):
            await m.peer_access("http://[fd00:ec2::254]/latest/")
        with pytest.raises(Exception, match="not an endpoint the operator allows"):
            await m.peer_access("http://10.20.30.40:8678/mcp")
        with pytest.raises(Exception, match="not bound"):  # dot segments never climb out of the prefix
            await m.peer_access(attacker.url + "/bound/../elsewhere", "good")
        with pytest.raises(Exception, match="not bound"):
            await m.peer_access(attacker.url + "/bound/%2e%2e/elsewhere", "good")
        with pytest.raises(Exception, match="user info"):
            await m.peer_access(f"http://user:pw@{attacker.url.removeprefix('http://')}/mcp")


async def test_redirects_to_another_host_are_not_followed(attacker: Recorder) -> None:
    from pools.peer_client import PeerClient

    bouncer = Recorder(redirect_to=attacker.url.replace("127.0.0.1", "localhost"))
    try:
        client = PeerClient(bouncer.url + "/mcp", token=BOUND_SECRET)
        up, how = await asyncio.to_thread(client.health)
        assert not up and "HTTP 302" in how
        try:
            reply = await client.call("list_pools", {}, timeout=10)
        except PoolUnavailable:
            pass
        else:
            assert reply.is_error
    finally:
        bouncer.close()
    assert bouncer.requests and not attacker.requests  # the bounce was refused, both ways


def test_a_credential_may_not_be_the_servers_own_token(home: Path) -> None:
    with pytest.raises(Exception, match="server's own token"):
        make_settings(home, credentials={"mine": {"env": "MAHAVISHNU_TOKEN", "endpoints": ["http://127.0.0.1:9/"]}})
    write_settings(home, extra="peer_tokens: {'http://127.0.0.1:9/mcp': 'x'}\n")
    with pytest.raises(Exception, match="replaced by credentials"):
        make_settings(home)


# -- 2. files outside the roots are never read -----------------------------------------------------------
@TRANSPORTS
async def test_decoys_outside_the_roots_are_unreadable(kind: str, home: Path, project: Path,
                                                       outside: Path) -> None:
    write_settings(home, extra=settings_yaml())
    (project / "ok.py").write_text("import os\n")
    (project / "link.py").symlink_to(outside / "secret.py")
    (project / "linkdir").symlink_to(outside, target_is_directory=True)
    (project / "eco-link.yaml").symlink_to(outside / "eco.yaml")
    relative = os.path.relpath(outside / "secret.py", project)
    attempts: list[tuple[str, dict[str, Any]]] = []
    for path in (str(outside / "secret.py"), relative, "link.py", "linkdir", str(outside), "/",
                 str(outside / ".env"), f"linkdir/{'secret.py'}", "./../" + relative):
        attempts.append(("pools_execute", {"task_type": "analyze", "payload": {"file": path}}))
        attempts.append(("pools_execute", {"task_type": "analyze", "payload": {"files": ["ok.py", path]}}))
        attempts.append(("pools_distribute", {"task_type": "analyze", "strategy": "map_reduce",
                                              "payload": {"files": [path]}}))
    for path in (str(outside / "eco.yaml"), "eco-link.yaml", os.path.relpath(outside / "eco.yaml", project)):
        attempts.append(("pools_discover", {"ecosystem_file": path}))
    async with client_of(kind, home, project) as client:
        for tool, args in attempts:
            result = await client.call_tool(tool, args)
            assert DECOY not in text_of(result), (tool, args)
            if tool == "pools_discover" or "file" in args.get("payload", {}):
                error = error_of(result)
                assert "roots" in error["message"] or "outside" in error["message"], error
        # a walk of the root skips the links out of it, and reads what is inside
        walked = await client.call_tool("pools_execute", {"task_type": "analyze", "payload": {"files": ["."]}})
        assert not walked.is_error and DECOY not in text_of(walked)
        result = walked.structured_content["task"]["result"]
        assert result["files_checked"] >= 1 and all(str(outside) not in i["file"] for i in result["issues"])


# -- 3. devices, FIFOs, directories: a clear error, and the server stays responsive ----------------------
@TRANSPORTS
async def test_devices_fifos_and_directories_are_refused_at_once(kind: str, home: Path, project: Path) -> None:
    write_settings(home, extra=settings_yaml())
    fifo = project / "pipe.py"
    os.mkfifo(fifo)
    (project / "eco-dir").mkdir()
    latencies: list[float] = []
    async with client_of(kind, home, project) as client:
        for path in ("/dev/zero", "/dev/stdin", "/dev/urandom", str(fifo), "pipe.py", "/proc/self/fd/0"):
            for tool, args in (
                    ("pools_execute", {"task_type": "analyze", "payload": {"file": path}}),
                    ("pools_execute", {"task_type": "analyze", "payload": {"files": [path]}}),
                    ("pools_distribute", {"task_type": "analyze", "payload": {"files": [path]}}),
                    ("pools_discover", {"ecosystem_file": path})):
                error = error_of(await client.call_tool(tool, args))
                assert error["field"] and ("roots" in error["message"] or "regular file" in error["message"]), error
                if client.base_url:
                    latencies.append(healthz_ms(client.base_url))
        error = error_of(await client.call_tool("pools_discover", {"ecosystem_file": "eco-dir"}))
        assert error["field"] == "ecosystem_file" and "directory" in error["message"]
    if latencies:
        print(f"/healthz between refused calls: max {max(latencies):.1f} ms over {len(latencies)}")


async def test_healthz_and_ping_answer_while_a_tool_waits_on_the_network(home: Path, project: Path) -> None:
    """A discovery probe hangs on a peer that never answers; meanwhile the server answers."""
    write_settings(home, extra=settings_yaml())
    holder = Holder()
    eco = project / "eco.yaml"
    eco.write_text(f"peers:\n  - name: slow\n    endpoint: {holder.url}\n")
    try:
        async with client_of("http", home, project) as client:
            await client.call_tool("pools_ping", {})  # the client's first call also lists the tools
            probing = asyncio.create_task(client.call_tool("pools_discover", {"ecosystem_file": str(eco)}))
            assert await asyncio.to_thread(holder.accepted.wait, 60), "the probe never connected"
            ms = await asyncio.to_thread(healthz_ms, client.base_url)
            began = time.perf_counter()
            pong = await client.call_tool("pools_ping", {})
            ping_ms = (time.perf_counter() - began) * 1000
            assert not pong.is_error
            still_waiting = holder.holding.is_set()
            report = await probing
            assert not report.is_error and not report.structured_content["found"][0]["healthy"]
    finally:
        holder.close()
    assert still_waiting, "the probe ended before /healthz and ping were tried: nothing was proven"
    print(f"while a probe hung: /healthz {ms:.1f} ms, pools_ping {ping_ms:.1f} ms")


# -- 4. every limit, at limit+1 ----------------------------------------------------------------------
async def test_every_limit_is_refused_at_limit_plus_one(home: Path, tmp_path: Path, gate: Path) -> None:
    settings = make_settings(home, max_pools=2, max_workers_per_pool=3, max_total_workers=4, max_queued_tasks=3,
                             max_payload_bytes=300, max_result_bytes=200, max_files_per_task=2,
                             max_file_bytes=100, max_read_bytes_per_task=150,
                             worker_memory_bytes=1 << 30)
    async with PoolManager(settings) as m:
        with pytest.raises(LimitExceeded, match="max_workers_per_pool") as info:
            await m.register(PoolConfig(name="wide", min_workers=0, max_workers=4))
        assert info.value.field == "max_workers"
        await m.register(PoolConfig(name="a", min_workers=1, max_workers=3))
        with pytest.raises(LimitExceeded, match="max_total_workers"):
            await m.register(PoolConfig(name="b", min_workers=0, max_workers=2))
        await m.register(PoolConfig(name="b", min_workers=0, max_workers=1))  # exactly at the limit
        with pytest.raises(LimitExceeded, match="max_pools"):
            await m.register(PoolConfig(name="c", min_workers=0, max_workers=1))

        with pytest.raises(LimitExceeded, match="max_payload_bytes") as info:
            await m.submit("b", "echo", {"text": "x" * 300})
        assert info.value.field == "payload"
        done = await m.execute("b", "echo", {"text": "x" * 250})  # under the payload limit...
        assert done.state is TaskState.FAILED and "max_result_bytes" in (done.error or "")  # ...its echo is not

        held = [await m.submit("a", "python", {"target": "tests.helpers.tasks:wait_for_file", "args": [str(gate)]})
                for _ in range(3)]
        with pytest.raises(LimitExceeded, match="max_queued_tasks"):
            await m.submit("a", "echo", {})
        gate.touch()
        for task in held:
            assert (await m.wait(task.task_id, 60)).state is TaskState.COMPLETED

        files = [tmp_path / f"f{i}.py" for i in range(3)]
        for f in files:
            f.write_text("x = 1\n")
        over = await m.execute("a", "analyze", {"files": [str(f) for f in files]})
        assert over.state is TaskState.FAILED and "max_files_per_task" in (over.error or "")
        big = tmp_path / "big.py"
        big.write_text("x = 1\n" * 20)  # 120 bytes
        over = await m.execute("a", "analyze", {"file": str(big)})
        assert over.state is TaskState.FAILED and "max_file_bytes" in (over.error or "")
        pair = [tmp_path / "p1.py", tmp_path / "p2.py"]
        for f in pair:
            f.write_text("y = 2\n" * 15)  # 90 bytes each: 180 in all
        over = await m.execute("a", "analyze", {"files": [str(f) for f in pair]})
        assert over.state is TaskState.FAILED and "max_read_bytes_per_task" in (over.error or "")

        grow = await m.execute("a", "python", {"target": "tests.helpers.tasks:big_text", "args": [1 << 31]},
                               TaskOptions(timeout=120))
        assert grow.state is TaskState.FAILED and "MemoryError" in (grow.error or "")
        assert (await m.execute("a", "echo", {"x": 1})).state is TaskState.COMPLETED  # the worker lives on


def test_limit_defaults_fit_the_machine() -> None:
    from pools.settings import Settings

    s = Settings()
    cores = os.cpu_count() or 2
    assert 4 <= s.max_total_workers <= cores * 16 and s.max_workers_per_pool <= s.max_total_workers
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 1000 <= s.max_queued_tasks <= max(1000, memory // (2 << 20))
    assert s.max_result_bytes <= max(64 << 20, memory // 16) and 2 << 30 <= s.worker_memory_bytes <= 8 << 30


# -- 5. private state ---------------------------------------------------------------------------------
async def test_state_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh" / "home"
        async with PoolManager(make_settings(fresh)) as m:
            await m.register(PoolConfig(name="p", min_workers=1, max_workers=1))
            assert (await m.execute("p", "echo", {"x": 1})).state is TaskState.COMPLETED
            files = sorted(p.name for p in fresh.iterdir() if p.is_file())
            assert {"mahavishnu.db", "mahavishnu.db-wal", "mahavishnu.db-shm", "owner.lock"} <= set(files)
            assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
            for name in files:
                assert stat.S_IMODE((fresh / name).stat().st_mode) == 0o600, name
        wide = tmp_path / "wide"
        wide.mkdir(mode=0o755)
        os.chmod(wide, 0o755)
        (wide / "mahavishnu.db").touch()
        os.chmod(wide / "mahavishnu.db", 0o644)
        async with PoolManager(make_settings(wide)):
            assert stat.S_IMODE(wide.stat().st_mode) == 0o700  # tightened at start
            assert stat.S_IMODE((wide / "mahavishnu.db").stat().st_mode) == 0o600
    finally:
        os.umask(old)


# -- 6. names in full, MCP roots over stdio --------------------------------------------------------------
async def test_names_are_matched_in_full(manager: PoolManager) -> None:
    for name in ("default\n", "a\nb", "pool_0123456789ab", "x" * 64):
        with pytest.raises(Exception, match="name"):
            await manager.register(PoolConfig.model_validate({"name": name}))
    from pools.ids import looks_like_pool_id

    assert not looks_like_pool_id("pool_0123456789ab\n") and looks_like_pool_id("pool_0123456789ab")


async def test_stdio_client_roots_narrow_the_file_roots(home: Path, project: Path) -> None:
    write_settings(home)
    allowed = project / "shared"
    allowed.mkdir()
    (allowed / "in.py").write_text("import os\n")
    (project / "beside.py").write_text("import os\n")
    async with client_of("stdio", home, project, roots=[allowed]) as client:
        inside = await client.call_tool("pools_execute", {"task_type": "analyze",
                                                         "payload": {"file": "shared/in.py"}})
        assert not inside.is_error and inside.structured_content["task"]["state"] == "completed"
        beside = error_of(await client.call_tool("pools_execute", {"task_type": "analyze",
                                                                   "payload": {"file": str(project / "beside.py")}}))
        assert beside["field"] == "payload.file" and "client's roots" in beside["message"]
