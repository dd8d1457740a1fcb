"""Memory search: locally by words, task ids, pool names and task types; and through operator-
configured memory endpoints, against a stand-in that takes exactly the released Session-Buddy's
tool signatures (tests/helpers/session_buddy_tools.json)."""

from __future__ import annotations

from pathlib import Path

from pools import aggregator
from pools.manager import PoolManager
from pools.models import PoolConfig
from pools.peer_client import PeerClient
from tests.conftest import make_settings
from tests.helpers.text_peer import CAPTURE, released_tools
from tests.test_peers import text_peer


async def test_local_search_matches_task_ids_pool_names_and_types(manager: PoolManager) -> None:
    await manager.register(PoolConfig(name="north-wing", min_workers=1, max_workers=1))
    done = await manager.execute("north-wing", "echo", {"items": ["plain words"]})
    other = await manager.execute("north-wing", "analyze", {"sources": {"a.py": "x = 1\n"}})
    for query in (done.task_id, "north-wing", done.pool_id, "echo"):
        found = await aggregator.search(manager, query)
        assert done.task_id in [h.task_id for h in found.results], query
    by_id = await aggregator.search(manager, done.task_id)
    assert [h.task_id for h in by_id.results] == [done.task_id]  # not every task of the pool
    assert other.task_id not in [h.task_id for h in (await aggregator.search(manager, "echo")).results]
    assert (await aggregator.search(manager, "zebra")).results == []


def test_the_stand_in_lists_the_released_tools() -> None:
    from tests.helpers.text_peer import build

    assert CAPTURE["session_buddy"] == "0.23.0" and len(CAPTURE["tools"]) == 49
    names = {t["name"] for t in CAPTURE["tools"]}
    assert {"store_reflection", "quick_search", "get_liveness"} <= names
    assert not names & {"create_pool", "search_conversations", "store_conversation"}  # not in the release
    assert set(build(False).schemas) == names


async def test_memory_search_reaches_a_released_session_buddy_endpoint(home: Path) -> None:
    with text_peer() as url:  # no pool tools, as released: an endpoint, never a pool
        refused = await PeerClient(url).call("quick_search", {"query": "x", "limit": 3})
        assert refused.is_error and "Unexpected keyword argument" in refused.text  # as the release answers
        assert "limit" not in released_tools()["quick_search"]["properties"]
        settings = make_settings(home, memory_endpoint=url, enabled_task_types=["echo"])
        async with PoolManager(settings) as m:
            await m.register(PoolConfig(name="east", min_workers=1, max_workers=1))
            done = await m.execute("east", "echo", {"items": ["alpha bravo"]})
            pushed = await aggregator.sync(m)
            assert pushed.method == "store_reflection" and pushed.pushed == 1 and pushed.error is None
            found = await aggregator.search(m, done.task_id)
            assert found.unreachable == [], found.sources
            assert {s.source for s in found.sources} == {"local", url}
            remote = [h for h in found.results if h.source == url]
            assert remote and done.task_id in remote[0].text  # the endpoint's own answer, found by task id
            missing = await aggregator.search(m, "zebra")
            assert missing.unreachable == [] and not [h for h in missing.results if h.source == "local"]
            assert not [h for h in missing.results if h.source == url]  # "❌ No results found" is no hit
            assert [s.hits for s in missing.sources if s.source == url] == [0]
            assert remote[0].text.startswith("[mahavishnu]") and len(remote) == 1  # the record's own line
