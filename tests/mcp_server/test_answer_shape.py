"""A tool answer's free-form values (a task's result, a map_reduce's reduced result) go to the SDK
as the model holds them, without a JSON-mode copy of ours: the wire shows the same JSON as before."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult
from pydantic_core import PydanticSerializationError

from mcp_server import results
from mcp_server.server import build_server
from mcp_server.toolserver import error_result, wire_form
from pools import jsontext
from pools.manager import PoolManager
from pools.models import DistributionResult, DistributionStrategy, PoolConfig, ShardResult, TaskState
from pools.task_types.echo import EchoPayload, EchoTask
from tests.conftest import make_settings
from tests.helpers.replies import data

ODD = {"set": {3}, "tuple": (1, "a"), "when": datetime.datetime(2026, 1, 2, 3, 4, 5), "é": [None, 1.5, True]}


def answer(result: Any) -> DistributionResult:
    shard = ShardResult(index=0, pool_id="pool_x", pool_name="x", task_id="task_" + "0" * 32,
                        state=TaskState.COMPLETED, result={"inner": (1, 2)})
    return DistributionResult(strategy=DistributionStrategy.MAP_REDUCE, task_type="echo", pools=["x"], total=1,
                              successful=1, failed=0, duration_s=0.1, shards=[shard], result=result,
                              summary="s")


def wire(result: CallToolResult) -> dict[str, Any]:
    """What the SDK sends: its own JSON-mode dump of the answer."""
    dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def test_the_dump_keeps_free_form_values_and_the_key_order() -> None:
    out = answer({"items": [1, 2]})
    assert json.dumps(jsontext.dump(out, by_alias=True)) == json.dumps(out.model_dump(mode="json", by_alias=True))
    held = jsontext.dump(out, by_alias=True)
    assert held["result"] is out.result and held["shards"][0]["result"] == {"inner": [1, 2]}
    payload = EchoPayload.model_validate({"extra": 1, "items": [1, (2, 3)], "none": None})
    assert list(jsontext.dump(payload, exclude_none=True)) == list(payload.model_dump(mode="json", exclude_none=True))
    assert EchoTask.validate_payload({"items": ["a", {"b": 1}], "k": "v"}) == {"items": ["a", {"b": 1}], "k": "v"}
    assert "items" not in EchoTask.validate_payload({"k": "v"})  # None left out, as before


async def test_an_answer_with_sets_tuples_and_datetimes_reads_as_before(home: Path) -> None:
    async with PoolManager(make_settings(home)) as manager:
        server = build_server(manager)
        spec = server.model_tools["pools_distribute"]
        got = server.shape(spec, answer(ODD))
        before = answer(ODD).model_dump(mode="json", by_alias=True)
        assert wire(got)["structuredContent"] == before
        assert json.loads(got.content[0].text) == before  # type: ignore[union-attr]
        with pytest.raises(PydanticSerializationError):  # not encodable: fails as the model's own dump does
            server.shape(spec, answer({"x": object()}))


async def test_a_reduced_result_over_the_limit_goes_to_a_blob_in_json_form(home: Path) -> None:
    async with PoolManager(make_settings(home, inline_result_max_bytes=1024)) as manager:
        server = build_server(manager)
        big = {**ODD, "pad": ["x" * 100] * 30}
        got = server.shape(server.model_tools["pools_distribute"], answer(big))
        link = wire(got)["structuredContent"]["result_link"]
        text, meta = results.read_page(manager.store, server.blobs, link["uri"])
        assert meta[results.META_NEXT] is None
        assert json.loads(text) == answer(big).model_dump(mode="json")["result"]


async def test_a_map_reduce_over_mcp_returns_every_item_in_order(home: Path) -> None:
    async with PoolManager(make_settings(home)) as manager, Client(build_server(manager)) as client:
        await manager.register(PoolConfig(name="a", min_workers=1, max_workers=1))
        await manager.register(PoolConfig(name="b", min_workers=1, max_workers=1))
        items = [i if i % 2 else {"n": i, "s": f"é{i}", "l": [i, None, 1.5]} for i in range(500)]
        got = await client.call_tool("pools_distribute", {"task_type": "echo", "strategy": "map_reduce",
                                                          "payload": {"items": items, "tag": "t"}})
        out = data(got)
        assert out["failed"] == 0 and out["result"] == {"echo": {"items": items}, "count": 500}
        assert all(s["result"] is None for s in out["shards"])


async def test_the_wire_form_is_what_the_sdk_sends_for_the_model(home: Path) -> None:
    """tools/call answers with a dict whose structuredContent is not walked (ModelToolServer._handle_call_tool);
    the SDK checks and dumps it for each protocol version exactly as it would the model."""
    from mcp_types.methods import SERVER_RESULTS, serialize_server_result

    async with PoolManager(make_settings(home, inline_result_max_bytes=1024)) as manager:
        server = build_server(manager)
        spec = server.model_tools["pools_distribute"]
        answers = [server.shape(spec, answer(ODD)), server.shape(spec, answer({**ODD, "pad": ["x" * 100] * 30})),
                   error_result("invalid_input", "bad", "payload")]
        assert isinstance(wire_form(answers[2]), CallToolResult)  # nothing structured: the model as it is
        versions = [v for m, v in SERVER_RESULTS if m == "tools/call"]
        for got in answers[:2]:
            form = wire_form(got)
            assert isinstance(form, dict) and form["structuredContent"] is got.structured_content
            for version in versions:
                assert serialize_server_result("tools/call", version, form) == \
                    serialize_server_result("tools/call", version, wire(got))
