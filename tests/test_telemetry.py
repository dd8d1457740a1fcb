"""Metrics on a live /metrics endpoint, traces through the in-memory exporter, the event log."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from pools.manager import PoolManager
from pools.models import PoolConfig, PoolType, RoutingStrategy, TaskState
from pools.telemetry import METRICS
from tests.conftest import make_settings
from tests.helpers.server import running_server, write_settings
from tests.helpers.waiting import wait_until_sync

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


def scrape(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url.removesuffix("/mcp") + "/metrics", timeout=10) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def test_live_metrics_match_the_spec(home: Path) -> None:
    from mcp_server.specs import metrics_markdown
    from tests.helpers.server import ROOT

    write_settings(home, extra=f"file_roots: ['{ROOT}']\n")  # the server may read this repository's code
    with running_server(home) as (url, _):
        from tests.helpers.server import run_cli

        payload = json.dumps({"files": [str(ROOT / "pools")]})
        assert run_cli(home, "pools", "execute", "-t", "analyze", "--payload", payload).returncode == 0
        assert run_cli(home, "pools", "execute", "-t", "analyze", "--payload", '{"file": "nofile.py"}').returncode == 1
        assert run_cli(home, "pools", "execute", "--auto-route", "-t", "echo", "--payload", "{}").returncode == 0
        families = scrape(url)
    for spec in METRICS:
        # the client library names a counter family without its _total suffix
        name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        assert name in families, f"{spec.name} missing from /metrics"
        family = families[name]
        assert family.type == spec.kind, spec.name  # type: ignore[attr-defined]
        for sample in family.samples:  # type: ignore[attr-defined]
            extra = set(sample.labels) - set(spec.labels) - {"le"}
            assert not extra, (spec.name, extra)
            assert "task_id" not in sample.labels
    produced = {f for f in families if f.startswith("mahavishnu_")}
    assert produced == {s.name.removesuffix("_total") if s.kind == "counter" else s.name for s in METRICS}
    tasks = {(s.labels["task_type"], s.labels["status"]): s.value
             for s in families["mahavishnu_tasks"].samples if s.name == "mahavishnu_tasks_total"}  # type: ignore[attr-defined]
    assert tasks[("analyze", "completed")] == 1 and tasks[("analyze", "failed")] == 1
    routed = [s for s in families["mahavishnu_routing_decisions"].samples  # type: ignore[attr-defined]
              if s.name == "mahavishnu_routing_decisions_total"]
    assert routed and routed[0].labels["strategy"] == "least_loaded"
    assert (Path(__file__).parents[1] / "specs" / "metrics.md").read_text() == metrics_markdown()


async def test_a_task_and_a_routing_decision_are_traced(home: Path) -> None:
    EXPORTER.clear()
    async with PoolManager(make_settings(home)) as m:
        await m.register(PoolConfig(name="t", min_workers=1, max_workers=1))
        decision = m.route("echo", RoutingStrategy.ROUND_ROBIN)
        done = await m.execute(decision.pool_id, "echo", {"x": 1})
        bad = await m.execute("t", "analyze", {"file": "nofile.py"})
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    route = spans["route"]
    assert route.attributes["mahavishnu.routing.strategy"] == "round_robin"
    ok = [s for s in EXPORTER.get_finished_spans() if s.attributes.get("mahavishnu.task.id") == done.task_id][0]
    assert ok.name == "task echo" and ok.attributes["mahavishnu.task.status"] == "completed"
    assert ok.attributes["mahavishnu.pool.name"] == "t"
    failed = [s for s in EXPORTER.get_finished_spans() if s.attributes.get("mahavishnu.task.id") == bad.task_id][0]
    assert failed.status.status_code.name == "ERROR" and bad.state is TaskState.FAILED


def console_spans(lines: list[str]) -> list[dict[str, Any]]:
    """Spans a process printed with OTEL_TRACES_EXPORTER=console (one JSON object each)."""
    text, spans, decoder, at = "".join(lines), [], json.JSONDecoder(), 0
    while (start := text.find("{", at)) != -1:
        span, at = decoder.raw_decode(text, start)
        spans.append(span)
    return spans


async def test_trace_context_reaches_a_peer(tmp_path: Path) -> None:
    """One trace from our task span to the peer's tool call and the peer's own task span, which the
    peer exports itself (OTEL_TRACES_EXPORTER=console)."""
    from tests.helpers.ports import free_port
    from tests.test_peers import GATE, PEER_TYPES, settings_for

    EXPORTER.clear()
    write_settings(tmp_path / "p1", PEER_TYPES, default_pool=False, extra=GATE)
    with running_server(tmp_path / "p1", "--port", str(free_port()), command=("peer", "serve"),
                        OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="the-peer") as (url, proc):
        async with PoolManager(settings_for(tmp_path / "main")) as m:
            await m.register(PoolConfig(name="buddy", type=PoolType.SESSION_BUDDY, endpoint=url))
            with trace.get_tracer("test").start_as_current_span("agent request") as root:
                done = await m.execute("buddy", "echo", {"x": 1})
            assert done.state is TaskState.COMPLETED
    ours = [s for s in EXPORTER.get_finished_spans() if s.attributes.get("mahavishnu.task.id") == done.task_id][0]
    assert ours.context.trace_id == root.get_span_context().trace_id
    # the MCP client span of the peer call is a child of our task span, in the same trace
    calls = [s for s in EXPORTER.get_finished_spans() if s.parent and s.parent.span_id == ours.context.span_id]
    assert calls, [s.name for s in EXPORTER.get_finished_spans()]
    # the peer's own task span (its pool, its task) is in the same trace; printed at its exit
    trace_id = f"0x{root.get_span_context().trace_id:032x}"
    wait_until_sync(lambda: any(s.get("name") == "task echo" for s in console_spans(proc.printed)), timeout=30,
                    what="the peer to print its spans as it exits")
    theirs = [s for s in console_spans(proc.printed) if s["name"] == "task echo"]
    assert len(theirs) == 1 and theirs[0]["context"]["trace_id"] == trace_id, theirs
    assert theirs[0]["resource"]["attributes"]["service.name"] == "the-peer"
    assert theirs[0]["attributes"]["mahavishnu.task.status"] == "completed"
    assert theirs[0]["attributes"]["mahavishnu.pool.name"].startswith("sb-pool_")
    assert theirs[0]["attributes"]["mahavishnu.task.id"] != done.task_id  # the peer's task, not ours


async def test_events_are_written_as_json_lines(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with PoolManager(make_settings(home, event_log=str(log))) as m:
        await m.register(PoolConfig(name="ev", min_workers=1, max_workers=1))
        await m.execute("ev", "analyze", {"file": "nofile.py"})
        await m.close_pool("ev")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "pool_registered" and "task_failed" in kinds and kinds[-1] == "pool_closed"
    assert all({"ts", "kind", "pool_id"} <= set(e) for e in events)
