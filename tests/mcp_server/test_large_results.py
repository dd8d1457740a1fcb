"""Results of any size: over the inline limit a tool answers with a resource link, resources/read
serves the value in pages under the 1 MiB an SSE client takes, and the CLI puts it back together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server import results
from mcp_server.server import build_server
from pools import jsontext
from pools.manager import PoolManager
from pools.models import PoolConfig
from pools.peer_client import read_linked
from tests.conftest import make_settings
from tests.helpers.replies import data
from tests.helpers.server import run_cli, running_server, write_settings
from tests.helpers.tasks import big_text

BIG = 50 * 1000 * 1000


@pytest.mark.timeout(900)
def test_a_50_mb_result_through_the_cli_over_http_byte_for_byte(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    out = tmp_path / "result.json"
    payload = json.dumps({"target": "tests.helpers.tasks:big_text", "args": [BIG, 7]})
    with running_server(home) as (url, _):
        run = run_cli(home, "pools", "execute", "-t", "python", "--payload", payload, "--timeout", "600",
                      "-f", "json", "--output", str(out), timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        expected = {"value": big_text(BIG, 7)}
        assert out.read_bytes() == jsontext.dumps(expected).encode()  # the bytes the server holds
        shown = json.loads(run.stdout)
        assert shown["task"]["result_link"]["uri"].endswith(f"{shown['task']['task_id']}/result")
        assert shown["task"]["result"] == expected  # -f json prints the whole result too
        task_id = shown["task"]["task_id"]
        del shown, run
        again = run_cli(home, "pools", "task", task_id, "--output", str(tmp_path / "again.json"), timeout=900)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "Result written to" in again.stderr
        assert (tmp_path / "again.json").read_bytes() == out.read_bytes()


def test_a_map_reduce_result_over_the_limit_comes_back_whole(home: Path, tmp_path: Path) -> None:
    """The reported failure: analyze map_reduce over thousands of issues, run against `serve`."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(120):
        (src / f"m{i}.py").write_text("".join(f"import mod_{i}_{j}\n" for j in range(40)))
    write_settings(home)
    out = tmp_path / "issues.json"
    with running_server(home) as (url, _):
        run = run_cli(home, "pools", "distribute", "-t", "analyze", "-s", "map_reduce", "--payload",
                      json.dumps({"files": [str(src)]}), "--output", str(out), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    reduced = json.loads(out.read_text())
    assert len(reduced["issues"]) == 120 * 40
    assert len(out.read_bytes()) > 256 * 1024  # it really was over the inline limit


async def test_answers_stay_small_and_pages_fit_an_sse_event(home: Path) -> None:
    settings = make_settings(home, inline_result_max_bytes=64 * 1024)
    async with PoolManager(settings) as manager, Client(build_server(manager)) as client:
        await manager.register(PoolConfig(name="p"))
        items = ['"q\\uote" é ' * 200] * 1500  # ~3 MB once JSON-escaped, echoed back as the result
        got = await client.call_tool("pools_execute", {"pool": "p", "task_type": "echo", "payload": {"items": items}})
        answer = data(got)
        size = len(json.dumps(answer))
        assert size < 64 * 1024, size  # the payload and the result both went behind links
        task = answer["task"]
        assert task["result"] is None and task["payload"] == {}
        kinds = [c.type for c in got.content]
        assert kinds.count("resource_link") == 2
        pages: list[Any] = []
        uri: str | None = task["result_link"]["uri"]
        while uri:
            page = (await client.read_resource(uri)).contents[0]
            assert len(page.model_dump_json(by_alias=True).encode()) < 1024 * 1024  # one SSE event's worth
            pages.append(page)
            uri = (page.meta or {}).get(results.META_NEXT)
        assert len(pages) > 1
        assert json.loads("".join(p.text for p in pages)) == {"echo": {"items": items}, "count": 1500}
        assert json.loads(await read_linked(client, task["payload_link"]["uri"])) == {"items": items}
        listed = data(await client.call_tool("pools_tasks", {"pool": "p"}))
        assert len(json.dumps(listed)) < 64 * 1024 and listed["tasks"][0]["result_link"] == task["result_link"]
        listed = await client.list_resource_templates()
        assert {t.uri_template for t in listed.resource_templates} == {results.URI_TEMPLATE_TASK,
                                                                        results.URI_TEMPLATE_DISTRIBUTION}
        try:
            await client.read_resource("mahavishnu://tasks/task_" + "0" * 32 + "/result")
        except Exception as exc:  # a JSON-RPC error, as resources/read reports a missing resource
            assert "no task" in str(exc)
        else:
            raise AssertionError("reading a missing task's result must fail")
