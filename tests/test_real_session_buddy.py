"""Against the released Session-Buddy (opt-in: it needs Python 3.13 and a few minutes to install).

    python3.13 -m venv /tmp/sb && /tmp/sb/bin/pip install session-buddy==0.23.0
    MAHAVISHNU_TEST_SESSION_BUDDY=/tmp/sb/bin/session-buddy python -m pytest tests/test_real_session_buddy.py

`session-buddy start` always binds 8678 (its settings class reads no environment, although its
own error message names SESSION_BUDDY__HTTP_PORT) and then calls
`session_buddy.server_optimized.run_server(host, port)`. The test calls that same function in the
release's own interpreter (the `python` beside the resolved script, so the variable must name a
venv's script), on a free port, in a process group of its own, with HOME, the XDG directories,
TMPDIR and the working directory all in the test's temporary directory (it writes `.claude/` and
`.duckdb/` under HOME, nothing in the working directory); its update check is off and its Dhara
registration goes to a port the test holds closed. (Its DuckDB still tries to INSTALL the httpfs
and vss extensions from the internet, which no setting turns off from outside; offline it goes on
without them.)
Before using it, the test checks it is talking to that process: the socket listening on the port
belongs to it, and its health_check and server_info tools report its pid, working directory and
HOME. Afterwards its whole process group is gone.

It has 49 tools and none of the pool tools: registration must fail naming them, memory sync must
fall back to store_reflection, and quick_search must find the pushed record by a marker made for
this run (and find nothing for a marker never stored).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from pools import aggregator
from pools.errors import PoolUnavailable
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolType
from pools.peer_client import PeerClient
from tests.conftest import make_settings
from tests.helpers.ports import free_port
from tests.helpers.waiting import gone, wait_until_sync

BINARY = os.environ.get("MAHAVISHNU_TEST_SESSION_BUDDY")
pytestmark = pytest.mark.skipif(not BINARY, reason="set MAHAVISHNU_TEST_SESSION_BUDDY to a session-buddy binary")

START_CEILING = 300.0  # its first start imports a lot; a busy 2-core machine takes minutes
STOP_CEILING = 60.0


def _tree(pid: int) -> dict[int, psutil.Process]:
    """The process and its descendants alive now (handles, so a reused pid is never mistaken for one)."""
    try:
        parent = psutil.Process(pid)
        return {p.pid: p for p in (parent, *parent.children(recursive=True))}
    except psutil.NoSuchProcess:
        return {}


def _listeners(port: int) -> set[int]:
    """Pids with a TCP socket listening on 127.0.0.1:port."""
    return {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            and c.laddr.ip in ("127.0.0.1", "0.0.0.0") and c.pid is not None}


def _group(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) members of a process group."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            body = json.loads(r.read())
            return body if r.status == 200 and isinstance(body, dict) else None
    except (OSError, ValueError):
        return None


@contextmanager
def _session_buddy(binary: str, scratch: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path]]:
    """The release serving a free port from `scratch`; its whole process group is gone afterwards."""
    python = Path(binary).resolve().with_name("python")  # the release's own interpreter (its venv)
    assert python.exists(), f"{binary} is not a venv's script: no {python}"
    home, cwd, tmp = scratch / "home", scratch / "cwd", scratch / "tmp"
    for path in (home, cwd, tmp):
        path.mkdir(parents=True)
    port = free_port()
    # Its Dhara registration goes to localhost:8683 unless told otherwise; a port bound here and
    # never listened on refuses it, and no other server can take that port meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp),
               "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
               "XDG_DATA_HOME": str(home / ".local/share"), "XDG_STATE_HOME": str(home / ".local/state"),
               "FASTMCP_CHECK_FOR_UPDATES": "off",
               "SESSION_BUDDY_DHARA_URL": f"http://127.0.0.1:{closed.getsockname()[1]}"}
        serve = f"from session_buddy.server_optimized import run_server; run_server(host='127.0.0.1', port={port})"
        with (scratch / "session-buddy.log").open("wb") as log:
            proc = subprocess.Popen([str(python), "-c", serve], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        seen: dict[int, psutil.Process] = {}

        def remember() -> None:
            for pid, handle in _tree(proc.pid).items():
                seen.setdefault(pid, handle)

        try:
            def listening() -> bool:
                if proc.poll() is not None:
                    tail = (scratch / "session-buddy.log").read_text(errors="replace")[-3000:]
                    raise AssertionError(f"session-buddy exited with {proc.returncode}:\n{tail}")
                remember()
                return bool(_listeners(port) & seen.keys())

            wait_until_sync(listening, timeout=START_CEILING, what=f"session-buddy to listen on port {port}",
                            interval=0.2)
            yield proc, port, home, cwd
        finally:
            if proc.returncode is None:  # once reaped, its pid may be someone else's
                remember()
            _stop(proc, seen)


def _stop(proc: subprocess.Popen[bytes], seen: dict[int, psutil.Process]) -> None:
    """SIGTERM to its group, SIGKILL after a ceiling; returns once every process it had is gone."""
    pgid = proc.pid  # start_new_session: it leads its own group
    if proc.returncode is None:  # not reaped yet, so its group id cannot belong to anyone else
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with suppress(AssertionError):
            wait_until_sync(lambda: gone(proc.pid), timeout=STOP_CEILING, what="session-buddy to stop", interval=0.1)
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # whatever is left of its group
        wait_until_sync(lambda: not _group(pgid), timeout=STOP_CEILING, what=f"process group {pgid} to end")
    for handle in seen.values():  # and any that left the group
        with suppress(psutil.NoSuchProcess):
            handle.kill()
    proc.wait(STOP_CEILING)
    _, alive = psutil.wait_procs([h for h in seen.values() if h.pid != proc.pid], timeout=STOP_CEILING)
    assert not alive, f"session-buddy processes survived: {alive}"


def _reported(text: str, label: str) -> str:
    found = re.search(rf"{re.escape(label)}:\s*(.+)", text)
    assert found, f"no {label!r} in the answer:\n{text}"
    return found.group(1).strip()


@pytest.mark.timeout(900)
async def test_the_released_session_buddy(home: Path, tmp_path: Path) -> None:
    assert BINARY
    with _session_buddy(BINARY, tmp_path / "session-buddy") as (proc, port, sb_home, sb_cwd):
        url = f"http://127.0.0.1:{port}/mcp"
        # It is the process started above: the listener is its, and so is whatever answers.
        listeners, tree = _listeners(port), set(_tree(proc.pid))
        assert listeners and listeners <= tree, (listeners, tree)
        health = _health(port)
        assert health and health.get("status") == "ok" and health.get("service") == "session-buddy", health
        peer = PeerClient(url)
        checked = await peer.call("health_check", {}, timeout=120)
        assert not checked.is_error, checked.text
        assert int(_reported(checked.text, "Process ID")) in _tree(proc.pid), checked.text
        assert Path(_reported(checked.text, "Working Directory")) == sb_cwd, checked.text
        info = await peer.call("server_info", {}, timeout=120)
        assert not info.is_error and Path(_reported(info.text, "Home Directory")) == sb_home, info.text

        marker = uuid.uuid4().hex  # in the pool's name, so only this run's record carries it
        pool = f"local-{marker}"
        async with PoolManager(make_settings(home, memory_endpoint=url)) as m:
            with pytest.raises(PoolUnavailable, match="lacks the pool tools create_pool"):
                await m.register(PoolConfig(name="real", type=PoolType.SESSION_BUDDY, endpoint=url))
            await m.register(PoolConfig(name=pool, min_workers=1, max_workers=1))
            task = await m.execute(pool, "analyze", {"sources": {"okapi_api.py": "import os\n"}})
            pushed = await aggregator.sync(m)
            assert pushed.method == "store_reflection" and pushed.pushed == 1 and pushed.error is None, pushed
            # Its answer repeats the query, so a hit is only the record's own line, with the task id
            # the query does not contain.
            record = f"[mahavishnu] analyze task {task.task_id} on pool {pool}"
            # memory search reaches it as a memory endpoint, with the parameters its quick_search takes
            found = await aggregator.search(m, marker)
            assert found.unreachable == [], found.sources
            assert any(h.source == url and record in h.text for h in found.results), found
        found_direct = await peer.call("quick_search", {"query": marker}, timeout=120)
        assert not found_direct.is_error and record in found_direct.text, found_direct.text
        # ...and a marker nobody stored finds nothing of ours.
        stranger = await peer.call("quick_search", {"query": uuid.uuid4().hex}, timeout=120)
        assert not stranger.is_error and "[mahavishnu]" not in stranger.text, stranger.text
        # Its state went where it was sent (the HOME it reported above is the scratch one).
        assert (sb_home / ".claude" / "data" / "reflection.duckdb").exists()
