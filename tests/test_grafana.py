"""The dashboard, alert rules and scrape config, proven against tsc, promtool and a live Prometheus."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pools.telemetry import METRICS
from tests.helpers.ports import free_port
from tests.helpers.server import ROOT, run_cli, running_server, write_settings
from tests.helpers.waiting import wait_until_sync

GRAFANA = ROOT / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "mahavishnu-pools.json").read_text())
MUST_HAVE_DATA = {"Pool Overview", "Worker Metrics", "Task Execution", "Latency", "System Throughput"}
SUBSTITUTIONS = {"$__rate_interval": "10s", "$__range": "5m", "$pool": ".*", "$price_per_worker_second": "0.00001",
                 "$role": "server"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: the test command's setup (bash .ci/setup) installs it"
    return path


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]


def concrete(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def test_the_dashboard_is_current_and_has_the_fifteen_panels() -> None:
    check = subprocess.run([sys.executable, str(GRAFANA / "build_dashboard.py"), "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout
    titles = [p["title"] for p in DASHBOARD["panels"]]
    assert titles == ["Pool Overview", "Worker Metrics", "Task Execution", "Pool Health", "Task Distribution",
                      "System Throughput", "Pool Utilization", "Latency", "Error Tracking", "Memory Usage",
                      "Routing Statistics", "Scaling Events", "Task History", "Pool Comparison", "Alert Summary"]
    assert any(p["type"] == "heatmap" for p in DASHBOARD["panels"])
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} == {"datasource", "role", "pool",
                                                               "price_per_worker_second"}
    assert DASHBOARD["uid"] == "pool-monitoring"


def test_the_dashboard_type_checks_against_grafana_schema() -> None:
    tool("node")
    result = subprocess.run([sys.executable, str(GRAFANA / "typecheck" / "check.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_a_query_or_rule_names_exists() -> None:
    known = {m.name for m in METRICS}
    texts = [expr for _, expr in queries()] + [(GRAFANA / "alerts.yml").read_text()]
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for text in texts for name in re.findall(r"mahavishnu_\w+", text)}
    assert used - known == set()
    # and every metric family feeds at least one panel or rule
    assert known - used == set()


def test_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=GRAFANA, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=GRAFANA, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    config = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=GRAFANA, capture_output=True,
                            text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def promql(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 400 carries the parse error
        return dict(json.loads(exc.read()))


def has_data(answer: dict[str, Any]) -> bool:
    result = answer.get("data", {}).get("result", [])
    values = [r["value"][1] for r in result] if isinstance(result, list) else [result[1]]
    return any(not math.isnan(float(v)) for v in values)


@contextmanager
def prometheus_scraping(tmp_path: Path, server: str, peer: str | None = None) -> Iterator[str]:
    """A real Prometheus on a free port scraping every second, with the shipped config's jobs and
    role labels (targets swapped for the test's); yields its base URL once it is ready."""
    prometheus = tool("prometheus")
    shipped = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    jobs = []
    for job in shipped["scrape_configs"]:
        target = server if job["job_name"] == "mahavishnu_pools" else peer
        if target is None:
            continue
        for group in job["static_configs"]:
            group["targets"] = [target]
        jobs.append(job)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "rule_files": [str(GRAFANA / "alerts.yml")], "scrape_configs": jobs}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prom = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until_sync(lambda: _ready(base), timeout=60, what="prometheus to be ready", interval=0.1)
        yield base
    finally:
        prom.terminate()
        prom.wait(30)


def test_every_panel_query_against_a_live_prometheus(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_settings(home)
    with running_server(home) as (url, _), prometheus_scraping(tmp_path, urllib.parse.urlsplit(url).netloc) as base:
        stop = threading.Event()
        worker = threading.Thread(target=workload, args=(home, stop), daemon=True)
        worker.start()
        try:
            pending = {(title, expr) for title, expr in queries() if title in MUST_HAVE_DATA and "deriv(" not in expr}
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                for title, expr in sorted(pending):
                    answer = promql(base, concrete(expr))
                    if answer.get("status") == "success" and has_data(answer):
                        pending.discard((title, expr))
                time.sleep(0.5)
            assert not pending, f"no data from: {sorted(pending)}"
            for title, expr in queries():
                answer = promql(base, concrete(expr))
                assert answer.get("status") == "success", (title, expr, answer.get("error"))
        finally:
            stop.set()
            worker.join(30)


def panel_query(title: str, legend: str) -> str:
    (expr,) = [t["expr"] for p in DASHBOARD["panels"] if p["title"] == title for t in p["targets"]
               if t["legendFormat"] == legend]
    return concrete(expr)


def values(base: str, expr: str) -> dict[str, float]:
    """An instant query's answer as {label values joined by '/': value}."""
    answer = promql(base, expr)
    assert answer.get("status") == "success", (expr, answer)
    return {"/".join(r["metric"].values()): float(r["value"][1]) for r in answer["data"]["result"]}


def test_the_first_scale_failure_and_task_type_reach_the_panels(tmp_path: Path) -> None:
    """Series exist at 0 before their first event, so increase() counts the first scale, the first
    failure and the first task of a type; a peer's pools are not counted twice; peer memory shows."""
    from tests.test_peers import peer

    home = tmp_path / "home"
    write_settings(home, ("analyze", "echo"), default_pool=False, extra="peer_health_interval_s: 0.2\n")
    with peer(tmp_path / "peer", free_port()) as (peer_url, _), running_server(home) as (url, _):
        run(home, "pools", "register", "-n", "first", "-m", "1", "-w", "3")
        run(home, "pools", "register", "-n", "buddy", "-t", "session-buddy", "--endpoint", peer_url)
        netloc = urllib.parse.urlsplit
        with prometheus_scraping(tmp_path, netloc(url).netloc, netloc(peer_url).netloc) as base:
            zero = ('mahavishnu_scaling_events_total{pool="first", direction="up", trigger="manual"} == 0 and '
                    'on () mahavishnu_errors_total{pool="first", kind="task_failed"} == 0 and on () '
                    'mahavishnu_tasks_total{pool="first", task_type="echo", status="completed"} == 0')
            wait_until_sync(lambda: has_data(promql(base, zero)), timeout=60, interval=0.25,
                            what="prometheus to store the first pool's series at 0")
            run(home, "pools", "scale", "first", "--target", "2")
            run(home, "pools", "execute", "-p", "first", "-t", "analyze", "--payload", '{"file": "nofile.py"}', code=1)
            run(home, "pools", "execute", "-p", "first", "-t", "echo", "--payload", '{"x": 1}')
            firsts = {
                "scale up": panel_query("Scaling Events", "scale up"),
                "manual trigger": panel_query("Scaling Events", "{{trigger}}"),
                "errors by kind": panel_query("Error Tracking", "errors in the last hour"),
                "tasks by type": panel_query("Task Distribution", "{{task_type}}"),
            }

            def seen() -> bool:
                got = {name: values(base, expr) for name, expr in firsts.items()}
                return (got["scale up"].get("", 0) > 0 and got["manual trigger"].get("manual", 0) > 0
                        and got["errors by kind"].get("", 0) > 0 and got["tasks by type"].get("echo", 0) > 0)

            wait_until_sync(seen, timeout=90, what="the first scale, failure and echo task on the panels",
                            interval=0.25)
            listed = json.loads(run(home, "pools", "list", "-f", "json").stdout)["pools"]
            total = panel_query("Pool Overview", "Total pools")
            wait_until_sync(lambda: values(base, total).get("") == len(listed), timeout=60,
                            what=f"Pool Overview to count the CLI's {len(listed)} pools")
            # each pool once in a per-pool panel; the peer's own pool only under role=peer
            per_pool = values(base, panel_query("Pool Health", "{{pool}} memory"))
            assert sorted(per_pool) == sorted(p["name"] for p in listed)
            wait_until_sync(lambda: values(base, panel_query("Pool Health", "{{pool}} memory")).get("buddy", 0) > 0,
                            timeout=60, what="the session-buddy pool's memory from its peer")
            peers = values(base, panel_query("Pool Health", "{{pool}} memory").replace('role=~"server|"',
                                                                                       'role=~"peer|"'))
            assert len(peers) == 1 and next(iter(peers)).startswith("sb-"), peers


def run(home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = run_cli(home, *args)
    assert result.returncode == code, (args, result.stdout, result.stderr)
    return result


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def workload(home: Path, stop: threading.Event) -> None:
    """Keep tasks flowing (completed, failed, routed) so rates and quantiles have data."""
    import asyncio

    from mcp import Client

    from mcp_server import runtime

    async def run() -> None:
        entry = runtime.read(home)
        assert entry is not None
        async with Client(entry["url"]) as client:
            await client.call_tool("pools_register", {"name": "second", "min_workers": 1, "max_workers": 2})
            for i in range(400):
                if stop.is_set():
                    return
                await client.call_tool("pools_execute", {"auto_route": True, "task_type": "analyze",
                                                         "payload": {"sources": {f"m{i}.py": "import os\n"}}})
                if i % 5 == 0:
                    await client.call_tool("pools_execute", {"task_type": "analyze", "payload": {"file": "nofile.py"}})
                await asyncio.sleep(0.05)

    asyncio.run(run())


class _FakeGrafana(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
        reply = json.dumps({"status": "success", "uid": "pool-monitoring", "url": "/d/pool-monitoring"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("auth", ["token", "basic"])
def test_deploy_script_posts_the_dashboard_to_grafanas_api(auth: str) -> None:
    tool("curl")
    server = HTTPServer(("127.0.0.1", 0), _FakeGrafana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeGrafana.seen.clear()
    env = {**os.environ, "GRAFANA_URL": f"http://127.0.0.1:{server.server_port}", "GRAFANA_FOLDER_UID": "ops"}
    env.pop("GRAFANA_TOKEN", None)
    if auth == "token":
        env["GRAFANA_TOKEN"] = "glsa_test"
    try:
        result = subprocess.run(["bash", str(GRAFANA / "deploy_dashboard.sh")], env=env, capture_output=True,
                                text=True, timeout=60)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    (request,) = _FakeGrafana.seen
    assert request["path"] == "/api/dashboards/db"
    assert request["auth"] == ("Bearer glsa_test" if auth == "token" else "Basic YWRtaW46YWRtaW4=")
    assert request["body"]["overwrite"] is True and request["body"]["folderUid"] == "ops"
    assert request["body"]["dashboard"]["uid"] == "pool-monitoring"
    assert len(request["body"]["dashboard"]["panels"]) == 15
    assert "/d/pool-monitoring" in result.stdout

