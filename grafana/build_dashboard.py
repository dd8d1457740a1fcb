"""Build grafana/dashboards/mahavishnu-pools.json: the 15 panels of the user documentation,
each query over metric families listed in specs/metrics.md.

    python grafana/build_dashboard.py           # write the JSON
    python grafana/build_dashboard.py --check   # fail if the committed JSON is stale

Every query is also evaluated by a live Prometheus in the tests (tests/test_grafana.py).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "mahavishnu-pools.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
POOL = 'pool=~"$pool"'
# A server and its peers are scraped alike; the shipped prometheus.yml labels each target with a
# role, and every query keeps to one role so that a peer's pools (the server's session-buddy pool
# seen from the other side) are not counted twice. A target without the label counts as any role.
ROLE = 'role=~"$role|"'
_SERIES = re.compile(r"\b(mahavishnu_\w+)(\{)?")


def with_role(expr: str) -> str:
    """Add the role matcher to every mahavishnu_* selector of a query."""
    return _SERIES.sub(lambda m: f"{m[1]}{{{ROLE}, " if m[2] else f"{m[1]}{{{ROLE}}}", expr)


def q(expr: str, legend: str, instant: bool = False) -> dict[str, Any]:
    return {"expr": with_role(expr), "legendFormat": legend, "instant": instant, "range": not instant}


# (title, panel type, unit, description, queries)
PANELS: list[tuple[str, str, str, str, list[dict[str, Any]]]] = [
    ("Pool Overview", "stat", "short", "Pools in total and by health.", [
        q("sum(mahavishnu_pools)", "Total pools", True),
        q('sum(mahavishnu_pools{status=~"running|scaling"}) or vector(0)', "Active", True),
        q('sum(mahavishnu_pools{status="degraded"}) or vector(0)', "Degraded", True),
        q('sum(mahavishnu_pools{status="failed"}) or vector(0)', "Failed", True),
    ]),
    ("Worker Metrics", "stat", "short", "Workers in total, busy and idle, and the busy share.", [
        q(f"sum(mahavishnu_pool_workers{{{POOL}}})", "Total workers", True),
        q(f'sum(mahavishnu_pool_workers{{state="busy", {POOL}}})', "Active", True),
        q(f'sum(mahavishnu_pool_workers{{state="idle", {POOL}}})', "Idle", True),
        q(f'sum(mahavishnu_pool_workers{{state="busy", {POOL}}}) / '
          f"clamp_min(sum(mahavishnu_pool_workers{{{POOL}}}), 1)", "Utilization", True),
    ]),
    ("Task Execution", "timeseries", "short", "Tasks completed and failed per pool (per second), success rate, "
     "average duration.", [
        q(f'sum by (pool) (rate(mahavishnu_tasks_total{{status="completed", {POOL}}}[{RATE}]))', "{{pool}} completed"),
        q(f'sum by (pool) (rate(mahavishnu_tasks_total{{status!="completed", {POOL}}}[{RATE}]))', "{{pool}} failed"),
        q(f'sum(rate(mahavishnu_tasks_total{{status="completed", {POOL}}}[{RATE}])) / '
          f"clamp_min(sum(rate(mahavishnu_tasks_total{{{POOL}}}[{RATE}])), 1e-9)", "success rate"),
        q(f"sum(rate(mahavishnu_task_duration_seconds_sum{{{POOL}}}[{RATE}])) / "
          f"clamp_min(sum(rate(mahavishnu_task_duration_seconds_count{{{POOL}}}[{RATE}])), 1e-9)", "avg duration (s)"),
    ]),
    ("Pool Health", "table", "short", "Status, health, memory and CPU per pool.", [
        q(f"max by (pool, status) (mahavishnu_pool_status{{{POOL}}})", "{{pool}} {{status}}", True),
        q(f"max by (pool, type) (mahavishnu_pool_up{{{POOL}}})", "{{pool}} up", True),
        q(f"sum by (pool) (mahavishnu_pool_memory_bytes{{{POOL}}})", "{{pool}} memory", True),
        q(f"sum by (pool) (mahavishnu_pool_cpu_percent{{{POOL}}})", "{{pool}} cpu %", True),
        q(f"max by (pool, worker) (mahavishnu_worker_cpu_percent{{{POOL}}})", "{{pool}}/{{worker}} cpu %", True),
    ]),
    ("Task Distribution", "barchart", "short", "Tasks over the dashboard's range by pool, type and status; the "
     "current queues.", [
        q(f"sum by (pool) (increase(mahavishnu_tasks_total{{{POOL}}}[$__range]))", "{{pool}}", True),
        q(f"sum by (task_type) (increase(mahavishnu_tasks_total{{{POOL}}}[$__range]))", "{{task_type}}", True),
        q(f"sum by (status) (increase(mahavishnu_tasks_total{{{POOL}}}[$__range]))", "{{status}}", True),
        q(f"sum by (pool) (mahavishnu_pool_queue_size{{{POOL}}})", "{{pool}} queue", True),
        q(f"sum by (pool) (mahavishnu_pool_in_flight{{{POOL}}})", "{{pool}} running", True),
    ]),
    ("System Throughput", "timeseries", "short", "Tasks per minute and per hour, the peak over the last hour "
     "and the trend.", [
        q(f"sum(rate(mahavishnu_tasks_total[{RATE}])) * 60", "tasks/min"),
        q("sum(increase(mahavishnu_tasks_total[1h]))", "tasks/hour"),
        q("max_over_time((sum(rate(mahavishnu_tasks_total[1m])) * 60)[1h:15s])", "peak tasks/min (1h)"),
        q("deriv((sum(rate(mahavishnu_tasks_total[5m])) * 60)[30m:1m])", "trend (tasks/min per s)"),
    ]),
    ("Pool Utilization", "heatmap", "percentunit", "Busy share of each pool's workers over time (heatmap), with "
     "capacity, efficiency (task time per worker second) and allocation.", [
        q(f"max by (pool) (mahavishnu_pool_utilization{{{POOL}}})", "{{pool}}"),
        q(f"sum by (pool) (mahavishnu_pool_capacity{{{POOL}}})", "{{pool}} capacity"),
        q(f"sum by (pool) (rate(mahavishnu_task_duration_seconds_sum{{{POOL}}}[{RATE}])) / "
          f"clamp_min(sum by (pool) (rate(mahavishnu_pool_worker_seconds_total{{{POOL}}}[{RATE}])), 1e-9)",
          "{{pool}} efficiency"),
        q(f"sum by (pool) (mahavishnu_pool_workers{{{POOL}}}) / clamp_min(sum by (pool) "
          f"(mahavishnu_pool_capacity{{{POOL}}}), 1)", "{{pool}} allocation"),
    ]),
    ("Latency", "timeseries", "s", "Task run time P50, P95, P99 and time spent queued (P95).", [
        q(f"histogram_quantile(0.5, sum by (le) (rate(mahavishnu_task_duration_seconds_bucket{{{POOL}}}[{RATE}])))",
          "P50"),
        q(f"histogram_quantile(0.95, sum by (le) (rate(mahavishnu_task_duration_seconds_bucket{{{POOL}}}[{RATE}])))",
          "P95"),
        q(f"histogram_quantile(0.99, sum by (le) (rate(mahavishnu_task_duration_seconds_bucket{{{POOL}}}[{RATE}])))",
          "P99"),
        q(f"histogram_quantile(0.95, sum by (le) (rate(mahavishnu_task_queue_seconds_bucket{{{POOL}}}[{RATE}])))",
          "queued P95"),
    ]),
    ("Error Tracking", "timeseries", "short", "Errors per pool and by kind, how many in the last hour, and the "
     "trend.", [
        q(f"sum by (pool) (rate(mahavishnu_errors_total{{{POOL}}}[{RATE}]))", "{{pool}}"),
        q(f"sum by (kind) (rate(mahavishnu_errors_total{{{POOL}}}[{RATE}]))", "{{kind}}"),
        q(f"sum(increase(mahavishnu_errors_total{{{POOL}}}[1h]))", "errors in the last hour"),
        q(f"sum(rate(mahavishnu_errors_total{{{POOL}}}[5m])) * 60", "errors/min (5m)"),
    ]),
    ("Memory Usage", "timeseries", "bytes", "Resident memory per pool and per worker, the total, and whether the "
     "memory alert fires.", [
        q(f"sum by (pool) (mahavishnu_pool_memory_bytes{{{POOL}}})", "{{pool}}"),
        q(f"max by (pool, worker) (mahavishnu_worker_memory_bytes{{{POOL}}})", "{{pool}}/{{worker}}"),
        q(f"sum(mahavishnu_pool_memory_bytes{{{POOL}}})", "total"),
        q('count(ALERTS{alertname="MahavishnuWorkerMemoryHigh", alertstate="firing"}) or vector(0)',
          "memory alerts firing"),
    ]),
    ("Routing Statistics", "timeseries", "short", "Routing decisions per strategy, the share that kept its choice, "
     "pool selection and the time to decide (P95).", [
        q(f"sum by (strategy) (rate(mahavishnu_routing_decisions_total[{RATE}]))", "{{strategy}}"),
        q(f'sum(rate(mahavishnu_routing_decisions_total{{outcome="chosen"}}[{RATE}])) / '
          f"clamp_min(sum(rate(mahavishnu_routing_decisions_total[{RATE}])), 1e-9)", "effectiveness"),
        q(f"sum by (pool) (increase(mahavishnu_routing_decisions_total{{{POOL}}}[$__range]))", "{{pool}}"),
        q(f"histogram_quantile(0.95, sum by (le) (rate(mahavishnu_routing_seconds_bucket[{RATE}])))",
          "routing latency P95"),
    ]),
    ("Scaling Events", "timeseries", "short", "Scale-ups and scale-downs, what triggered them, and how often.", [
        q(f'sum(increase(mahavishnu_scaling_events_total{{direction="up", {POOL}}}[$__range]))', "scale up"),
        q(f'sum(increase(mahavishnu_scaling_events_total{{direction="down", {POOL}}}[$__range]))', "scale down"),
        q(f"sum by (trigger) (increase(mahavishnu_scaling_events_total{{{POOL}}}[$__range]))", "{{trigger}}"),
        q(f"sum(rate(mahavishnu_scaling_events_total{{{POOL}}}[{RATE}])) * 3600", "events/hour"),
    ]),
    ("Task History", "table", "short", "Recent tasks by pool, type and outcome, the duration trend and the mix of "
     "task types.", [
        q(f"sum by (pool, task_type, status) (increase(mahavishnu_tasks_total{{{POOL}}}[15m]))",
          "{{pool}} {{task_type}} {{status}}", True),
        q(f"sum by (status) (increase(mahavishnu_tasks_total{{{POOL}}}[1h]))", "{{status}}", True),
        q(f"sum(rate(mahavishnu_task_duration_seconds_sum{{{POOL}}}[30m])) / "
          f"clamp_min(sum(rate(mahavishnu_task_duration_seconds_count{{{POOL}}}[30m])), 1e-9)", "avg duration 30m",
          True),
        q(f"sum by (task_type) (rate(mahavishnu_tasks_submitted_total{{{POOL}}}[1h]))", "{{task_type}} rate", True),
        q("sum by (strategy, outcome) (increase(mahavishnu_distributions_total[1h]))",
          "distribute {{strategy}} {{outcome}}", True),
    ]),
    ("Pool Comparison", "table", "short", "Throughput by pool type, cost per pool per hour at "
     "$price_per_worker_second, tasks per worker-second and the top pools.", [
        q(f"sum by (type) (sum by (pool) (rate(mahavishnu_tasks_total[{RATE}])) * on (pool) group_left (type) "
          "(0 * mahavishnu_pool_up + 1))", "{{type}} tasks/s", True),
        q(f"sum by (pool) (rate(mahavishnu_pool_worker_seconds_total{{{POOL}}}[{RATE}])) * 3600 * "
          "$price_per_worker_second", "{{pool}} cost/hour", True),
        q(f'sum by (pool) (rate(mahavishnu_tasks_total{{status="completed", {POOL}}}[{RATE}])) / '
          f"clamp_min(sum by (pool) (rate(mahavishnu_pool_worker_seconds_total{{{POOL}}}[{RATE}])), 1e-9)",
          "{{pool}} tasks per worker-second", True),
        q(f'topk(5, sum by (pool) (rate(mahavishnu_tasks_total{{status="completed"}}[{RATE}])))', "{{pool}}", True),
    ]),
    ("Alert Summary", "table", "short", "Alerts firing now, by severity, how often alerts fired in the last hour, "
     "and their history.", [
        q('count(ALERTS{alertstate="firing"}) or vector(0)', "firing", True),
        q('count by (severity) (ALERTS{alertstate="firing"})', "{{severity}}", True),
        q('count(count_over_time(ALERTS{alertstate="firing"}[1h])) or vector(0)', "alerts in the last hour", True),
        q("max by (alertname, severity, pool) (ALERTS)", "{{alertname}} {{pool}}"),
    ]),
]


def layout() -> list[dict[str, int]]:
    """Two panels a row; a heatmap takes a row of its own."""
    spots, x, y = [], 0, 0
    for _, kind, *_ in PANELS:
        width = 24 if kind == "heatmap" else 12
        if x + width > 24:
            x, y = 0, y + 8
        spots.append({"h": 8, "w": width, "x": x, "y": y})
        x += width
    return spots


def panel(index: int, grid: dict[str, int], title: str, kind: str, unit: str, description: str,
          queries: list[dict[str, Any]]) -> dict[str, Any]:
    targets = [{**t, "refId": chr(ord("A") + i), "datasource": DS} for i, t in enumerate(queries)]
    return {
        "id": index + 1, "title": title, "type": kind, "description": description, "datasource": DS,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {}, "targets": targets,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "pool-monitoring", "title": "Mahavishnu Pools", "tags": ["mahavishnu", "pools"],
        "description": "Pools, workers, tasks, latency, routing, scaling, cost and alerts of Mahavishnu Pools.",
        "editable": True, "graphTooltip": 1, "refresh": "10s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-1h", "to": "now"}, "timezone": "browser",
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {"text": "default", "value": "default"}, "hide": 0, "refresh": 1, "options": [],
             "skipUrlSync": False},
            {"name": "role", "label": "Scraped as", "type": "custom", "query": "server,peer",
             "description": "server: the pools a Mahavishnu server manages (the default); peer: the pools "
                            "inside its session-buddy peers, seen from the peers' own /metrics.",
             "current": {"text": "server", "value": "server"}, "hide": 0, "multi": False, "includeAll": False,
             "options": [{"text": r, "value": r, "selected": r == "server"} for r in ("server", "peer")],
             "skipUrlSync": False},
            {"name": "pool", "label": "Pool", "type": "query", "datasource": DS,
             "query": {"query": with_role("label_values(mahavishnu_pool_up, pool)"), "refId": "pool"},
             "includeAll": True, "multi": True,
             "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "hide": 0, "refresh": 2, "options": [],
             "skipUrlSync": False,
             "sort": 1},
            {"name": "price_per_worker_second", "label": "Price per worker-second", "type": "textbox",
             "query": "0.00001", "current": {"text": "0.00001", "value": "0.00001"}, "hide": 0, "options": [],
             "skipUrlSync": False},
        ]},
        "panels": [panel(i, grid, *spec) for i, (grid, spec) in enumerate(zip(layout(), PANELS, strict=True))],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"stale: {OUT} (run python grafana/build_dashboard.py)")
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(PANELS)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
