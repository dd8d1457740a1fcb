"""Against the released Session-Buddy (opt-in: it needs Python 3.13 and a few minutes to install).

    python3.13 -m venv /tmp/sb && /tmp/sb/bin/pip install session-buddy==0.23.0
    MAHAVISHNU_TEST_SESSION_BUDDY=/tmp/sb/bin/session-buddy python -m pytest tests/test_real_session_buddy.py

It serves 127.0.0.1:8678 with 49 tools and none of the pool tools: registration must fail naming
them, memory sync must fall back to store_reflection, and its quick_search must find what we
pushed.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from pools import aggregator
from pools.errors import PoolUnavailable
from pools.manager import PoolManager
from pools.models import PoolConfig, PoolType
from pools.peer_client import PeerClient
from tests.conftest import make_settings
from tests.helpers.waiting import wait_until_sync

BINARY = os.environ.get("MAHAVISHNU_TEST_SESSION_BUDDY")
URL = "http://127.0.0.1:8678/mcp"
pytestmark = pytest.mark.skipif(not BINARY, reason="set MAHAVISHNU_TEST_SESSION_BUDDY to a session-buddy binary")


def _healthy() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8678/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


async def test_the_released_session_buddy(home: Path, tmp_path: Path) -> None:
    assert BINARY
    proc = subprocess.Popen([BINARY, "start"], env={**os.environ, "HOME": str(tmp_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_sync(_healthy, timeout=120, what="session-buddy to answer /health")
        async with PoolManager(make_settings(home, memory_endpoint=URL)) as m:
            with pytest.raises(PoolUnavailable, match="lacks the pool tools create_pool"):
                await m.register(PoolConfig(name="real", type=PoolType.SESSION_BUDDY, endpoint=URL))
            await m.register(PoolConfig(name="local", min_workers=1, max_workers=1))
            await m.execute("local", "analyze", {"sources": {"okapi_api.py": "import os\n"}})
            pushed = await aggregator.sync(m)
            assert pushed.method == "store_reflection" and pushed.pushed == 1 and pushed.error is None
            # memory search reaches it as a memory endpoint, with the parameters its quick_search takes
            found = await aggregator.search(m, "analyze")
            assert found.unreachable == [], found.sources
            assert any(h.source == URL and "[mahavishnu] analyze task" in h.text for h in found.results), found
        found = await PeerClient(URL).call("quick_search", {"query": "mahavishnu"}, timeout=60)
        assert not found.is_error and "[mahavishnu] analyze task" in found.text
    finally:
        proc.terminate()
        proc.wait(30)
