"""How the CLI shows each tool's structured output: table (rich), json, markdown.

json is exactly the tool's structured output. Table and markdown follow the user
documentation's layouts. Everything here works on plain dicts from the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pools.ids import SHORT_TASK_ID

ICONS = {"running": "●", "initializing": "◐", "degraded": "⚠", "failed": "✗", "pending": "○",
         "scaling": "◑", "stopped": "■"}
COLORS = {"running": "green", "initializing": "yellow", "degraded": "yellow", "failed": "red",
          "pending": "dim", "scaling": "cyan", "stopped": "dim"}
TASK_ICONS = {"completed": "✓", "failed": "✗", "timed_out": "✗", "cancelled": "■", "queued": "○",
              "running": "◐"}


def esc(value: Any) -> str:
    """Text from the wire must never be read as rich markup."""
    from rich.markup import escape

    return escape(str(value))


def icon(status: str, color: bool = True) -> str:
    mark = ICONS.get(status, "?")
    return f"[{COLORS.get(status, 'white')}]{mark}[/]" if color else mark


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MB"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


NARROW = 120  # columns below which tables shorten ids (unless --wide)


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("-" * (len(h) + 2) for h in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


class Renderer:
    """Print one tool result in one format."""

    def __init__(self, fmt: str, wide: bool = False) -> None:
        from rich.console import Console

        self.fmt = fmt
        self.console = Console(highlight=False)
        self.out: Callable[..., None] = self.console.print
        self.wide = wide or fmt != "table" or self.console.width >= NARROW

    def pid(self, pool_id: str) -> str:
        """A pool id as a table shows it: whole, or its first hex digits on a narrow terminal."""
        return pool_id if self.wide or len(pool_id) <= 10 else pool_id[:9] + "…"

    def tid(self, task_id: str) -> str:
        return task_id if self.wide or len(task_id) <= SHORT_TASK_ID + 1 else task_id[:SHORT_TASK_ID] + "…"

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False))

    def text(self, lines: list[str]) -> None:
        if self.fmt == "markdown":
            print("\n".join(lines))
        else:
            for line in lines:
                self.out(line)

    # -- pools ----------------------------------------------------------------------------
    def pool_table(self, title: str, pools: list[dict[str, Any]], columns: str = "list") -> None:
        from rich.table import Table

        table = Table(title=title)
        heads = ["Pool ID", "Name", "Type", "Status", "Workers"]
        heads += ["Range"] if columns == "list" else ["Completed", "Failed", "Queue"]
        for h in heads:
            table.add_column(h, justify="right" if h in ("Workers", "Completed", "Failed", "Queue") else "left")
        for p in pools:
            row = [self.pid(p["pool_id"]), esc(p["name"]), p["pool_type"], icon(p["status"]), str(p["workers"])]
            if columns == "list":
                row.append(f"{p['min_workers']}-{p['max_workers']}")
            else:
                m = p["metrics"]
                row += [str(m["tasks_completed"]), str(m["tasks_failed"]), str(m["queue_size"])]
            table.add_row(*row)
        self.out(table)

    def pools_list(self, data: dict[str, Any]) -> None:
        pools = data["pools"]
        if self.fmt == "markdown":
            rows = [[p["pool_id"], p["name"], p["pool_type"], p["status"], p["workers"], p["region"]]
                    for p in pools]
            print("## Active Pools\n\n" + _md_table(["Pool ID", "Name", "Type", "Status", "Workers", "Region"],
                                                    rows))
            return
        if not pools:
            self.out("No pools. Register one: mahavishnu pools register --name local --type mahavishnu")
            return
        self.pool_table("Active Pools", pools)

    def pool_detail(self, p: dict[str, Any], heading: str = "") -> None:
        m = p["metrics"]
        status = p["status"]
        md = self.fmt == "markdown"
        lines = [heading] if heading else []
        lines += [
            f"Pool: {p['pool_id']}", f"Name: {p['name']}", f"Type: {p['pool_type']}",
            f"Status: {icon(status, not md)} {status.upper()}"
            + (f" ({esc(p['status_reason'])})" if p.get("status_reason") else ""),
            f"Workers: {p['workers']} ({p['min_workers']}-{p['max_workers']})",
            f"Region: {p['region']}",
        ]
        if p.get("endpoint"):
            lines.append(f"Endpoint: {esc(p['endpoint'])}")
        lines += ["", "Metrics:", f"  Tasks Completed: {m['tasks_completed']}",
                  f"  Tasks Failed: {m['tasks_failed']}", f"  Avg Duration: {_secs(m['avg_duration_s'])}",
                  f"  Memory Usage: {_mb(m['memory_mb'])}"]
        if m.get("queue_size"):
            lines.append(f"  Queue: {m['queue_size']}")
        if md:
            lines = [f"{line}  " if line and not line.startswith("  ") else line for line in lines]
        self.text(lines)
        workers = p.get("worker_details") or []
        if workers and not md:
            from rich.table import Table

            table = Table(title="Workers")
            for h in ("Worker", "PID", "State", "Task", "Done", "Memory MB", "CPU %"):
                table.add_column(h)
            for w in workers:
                table.add_row(w["worker_id"], str(w.get("pid") or "-"), w["state"], w.get("task_id") or "-",
                              str(w["tasks_done"]), "-" if w.get("memory_mb") is None else f"{w['memory_mb']:.1f}",
                              "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}")
            self.out(table)

    def pools_get(self, data: dict[str, Any]) -> None:
        self.pool_detail(data)

    def pools_register(self, data: dict[str, Any]) -> None:
        self.text([f"✓ Registered pool: {data['pool_id']} ({data['name']})"])
        self.pool_detail(data)

    def pools_close(self, data: dict[str, Any]) -> None:
        self.text([f"✓ Pool closed: {data['pool_id']} ({data['name']})"])

    def pools_scale(self, data: dict[str, Any]) -> None:
        self.text([f"✓ Pool {data['name']} scaled: {plural(data['workers'], 'worker')} "
                   f"({data['min_workers']}-{data['max_workers']})"])

    # -- tasks ----------------------------------------------------------------------------
    def pools_execute(self, data: dict[str, Any]) -> None:
        task = data["task"]
        state = task["state"]
        lines = [f"✓ Routed to pool: {data['pool_id']} ({data['pool_name']})"]
        if data.get("routing"):
            lines.append(f"  Routing: {data['routing']['strategy']}: {esc(data['routing']['reason'])}")
        if not data["finished"]:
            lines += [f"○ Task {task['task_id']} {state}", f"  {esc(data['message'])}"]
        else:
            ok = state == "completed"
            lines.append(f"{'✓' if ok else '✗'} Task {'completed' if ok else state.replace('_', ' ')}")
            lines.append(f"  Task: {task['task_id']}")
            lines.append(f"  Status: {state}")
            if ok:
                lines.append(f"  Output: {esc(task.get('summary') or '')}")
            else:
                lines.append(f"  Error: {esc((task.get('error') or '').splitlines()[0] if task.get('error') else '')}")
            lines.append(f"  Duration: {_secs(task.get('duration_s'))}")
        self.text(lines if self.fmt != "markdown" else [f"{line}  " for line in lines])

    def pools_distribute(self, d: dict[str, Any]) -> None:
        ok = d["failed"] == 0
        lines = [f"Distributing task across {plural(len(d['pools']), 'pool')}...", f"  Strategy: {d['strategy']}",
                 f"{'✓' if ok else '✗'} Distribution {'completed' if ok else 'finished with failures'}",
                 f"  Total: {d['total']}", f"  Successful: {d['successful']}", f"  Failed: {d['failed']}"]
        if d.get("retried"):
            lines.append(f"  Retried on another pool: {d['retried']}")
        lines.append(f"  Duration: {_secs(d.get('duration_s'))}")
        if d.get("summary"):
            lines.append(f"  Result: {esc(d['summary'])}")
        for shard in d["shards"]:
            if shard["state"] != "completed":
                why = (shard.get("error") or shard["state"]).splitlines()[0]
                lines.append(f"  ✗ shard {shard['index']} on {shard['pool_name'] or '-'}: {esc(why)}")
        self.text(lines if self.fmt != "markdown" else [f"{line}  " for line in lines])
        if self.fmt == "table" and d["strategy"] != "map_reduce" and len(d["shards"]) <= 50:
            from rich.table import Table

            table = Table(title="Shards")
            for h in ("Shard", "Pool", "Status", "Duration", "Summary"):
                table.add_column(h, overflow="fold")
            for shard in d["shards"]:
                table.add_row(str(shard["index"]), esc(shard["pool_name"]),
                              f"{TASK_ICONS.get(shard['state'], '?')} {shard['state']}",
                              _secs(shard.get("duration_s")), esc(shard.get("summary") or ""))
            self.out(table)

    def pools_rebalance(self, r: dict[str, Any]) -> None:
        lines = [f"✓ Rebalanced ({r['strategy']}): {esc(r['message'])}"]
        lines += [f"  moved {m['task_id']}: {m['from_pool']} → {m['to_pool']}" for m in r["moved"]]
        lines += [f"  resized {z['pool']}: {z['from_workers']} → {z['to_workers']} workers" for z in r["resized"]]
        self.text(lines if self.fmt != "markdown" else [f"{line}  " for line in lines])

    def pools_task(self, t: dict[str, Any]) -> None:
        md = self.fmt == "markdown"
        lines = [f"Task: {t['task_id']}", f"Status: {t['state'].upper()}", f"Type: {t['task_type']}",
                 f"Pool: {t['pool_id']}", f"Worker: {t.get('worker_id') or '-'}",
                 f"Created: {_when(t.get('created_at'))}", f"Started: {_when(t.get('started_at'))}"]
        if t.get("finished_at"):
            lines.append(f"Finished: {_when(t.get('finished_at'))}")
        lines.append(f"Duration: {_secs(t.get('duration_s'))}")
        if md:
            lines = [f"{line}  " for line in lines]
        if t.get("summary") and t["state"] == "completed":
            lines += ["Result:", f"  {t['summary']}"]
        if t.get("error"):
            lines += ["Error:"] + [f"  {line}" for line in t["error"].rstrip().splitlines()[:30]]
        if md:
            print("\n".join(lines))
        else:
            from rich.markup import escape

            for line in lines:
                self.out(escape(line))

    def pools_tasks(self, data: dict[str, Any]) -> None:
        rows = [[self.tid(t["task_id"]), t["task_type"], self.pid(t["pool_id"]), t["state"],
                 _when(t.get("created_at")), _secs(t.get("duration_s")), (t.get("summary") or "")[:60]]
                for t in data["tasks"]]
        heads = ["Task ID", "Type", "Pool", "Status", "Created", "Duration", "Summary"]
        if self.fmt == "markdown":
            print("## Tasks\n\n" + _md_table(heads, rows))
            return
        from rich.table import Table

        if not self.wide:  # a narrow terminal: one line a task; --wide shows the creation time too
            heads.remove("Created")
            rows = [row[:4] + row[5:] for row in rows]
        table = Table(title="Tasks")
        for row in rows:
            row[3] = f"{TASK_ICONS.get(row[3], '?')} {row[3]}"
        fits = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(heads)]
        for i, h in enumerate(heads):
            # Narrow: one line a task, only the summary gives way (whole in `pools task ID`); --wide: all, folded.
            if self.wide:
                table.add_column(h, overflow="fold")
            elif h == "Summary":
                room = self.console.width - sum(fits[:i]) - 3 * len(heads) - 1
                table.add_column(h, overflow="ellipsis", no_wrap=True, max_width=max(8, room))
            else:
                table.add_column(h, no_wrap=True, min_width=fits[i])
        for row in rows:
            table.add_row(*(esc(c) for c in row))
        self.out(table)

    def pools_cancel(self, t: dict[str, Any]) -> None:
        self.text([f"✓ Task cancelled: {t['task_id']}", f"  Status: {t['state']}"])

    # -- overview -------------------------------------------------------------------------
    def pools_stats(self, s: dict[str, Any]) -> None:
        rows: list[tuple[str, Any]] = [
            ("Total Pools", s["total_pools"]), ("Total Workers", s["total_workers"]),
            ("Active Pools", s["active_pools"]), ("Degraded Pools", s["degraded_pools"]),
            ("Failed Pools", s["failed_pools"]), ("Busy Workers", s["busy_workers"]),
            ("Queued Tasks", s["queued_tasks"]), ("Running Tasks", s["running_tasks"]),
            ("Tasks Completed", s["tasks_completed"]), ("Tasks Failed", s["tasks_failed"]),
            ("Tasks Cancelled", s["tasks_cancelled"]), ("Tasks Timed Out", s["tasks_timed_out"]),
            ("Avg Duration", _secs(s.get("avg_duration_s"))), ("Memory Usage", _mb(s.get("memory_mb"))),
        ]
        for kind, t in sorted(s.get("by_type", {}).items()):
            rows += [(f"{kind}_pools", t["pools"]), (f"{kind}_workers", t["workers"])]
        if self.fmt == "markdown":
            print("## Pool Statistics\n\n" + _md_table(["Metric", "Value"], [list(r) for r in rows]))
            return
        from rich.table import Table

        table = Table(title="Pool Statistics")
        table.add_column("Metric")
        table.add_column("Value", justify="right")
        for name, value in rows:
            table.add_row(name, str(value))
        self.out(table)

    def pools_health(self, h: dict[str, Any]) -> None:
        md = self.fmt == "markdown"
        lines = [f"Pool Manager Health: {h['status'].upper()}", f"Active Pools: {h['active_pools']}", "",
                 "Pool Status:"]
        for p in h["pools"]:
            why = f" ({esc(p['reason'])})" if p.get("reason") else ""
            lines.append(f"  {icon(p['status'], not md)} {self.pid(p['pool_id'])} ({esc(p['name'])}): "
                         f"{plural(p['workers'], 'worker')}{why}")
        if not h["pools"]:
            lines.append("  (no pools)")
        self.text(lines)

    def watch_table(self, snap: dict[str, Any]) -> Any:
        from rich.table import Table

        table = Table(title=f"Pool Monitor (Active: {snap['active']})")
        for h in ("Pool ID", "Name", "Type", "Status", "Workers", "Completed", "Failed", "Queue"):
            table.add_column(h, justify="right" if h in ("Workers", "Completed", "Failed", "Queue") else "left")
        for p in snap["pools"]:
            m = p["metrics"]
            table.add_row(self.pid(p["pool_id"]), esc(p["name"]), p["pool_type"], icon(p["status"]), str(p["workers"]),
                          str(m["tasks_completed"]), str(m["tasks_failed"]), str(m["queue_size"]))
        return table

    def pools_watch(self, snap: dict[str, Any]) -> None:
        if self.fmt == "markdown":
            rows = [[p["pool_id"], p["name"], p["pool_type"], p["status"], p["workers"],
                     p["metrics"]["tasks_completed"], p["metrics"]["tasks_failed"]] for p in snap["pools"]]
            print(f"## Pool Monitor (Active: {snap['active']})\n\n"
                  + _md_table(["Pool ID", "Name", "Type", "Status", "Workers", "Completed", "Failed"], rows))
        else:
            self.out(self.watch_table(snap))

    def pools_discover(self, d: dict[str, Any]) -> None:
        lines = [f"Discovery from {esc(d['source'])}"]
        for f in d["found"]:
            mark = "●" if f["healthy"] else "✗"
            where = f.get("endpoint") or f"namespace {f.get('namespace')}"
            lines.append(f"  {mark} {esc(f['name'])} ({f['kind']}, {esc(where)}): {esc(f['detail'])}")
            lines.append(f"      {esc(f['action'])}" + (f" as {f['pool_id']}" if f.get("pool_id") else ""))
        if not d["found"]:
            lines.append("  (no candidates)")
        lines.append(f"Registered now: {d['registered_now']}")
        self.text(lines if self.fmt != "markdown" else [f"{line}  " for line in lines])

    def pools_memory_sync(self, r: dict[str, Any]) -> None:
        ok = not r.get("error")
        lines = [f"{'✓' if ok else '✗'} Memory sync to {esc(r['endpoint'])}"
                 + (f" ({r['method']})" if r.get("method") else ""),
                 f"  Pushed: {r['pushed']} in {plural(r['batches'], 'batch', 'batches')}",
                 f"  Remaining: {r['remaining']}"]
        if r.get("error"):
            lines.append(f"  Error: {esc(r['error'])}")
        self.text(lines if self.fmt != "markdown" else [f"{line}  " for line in lines])

    def pools_memory_search(self, r: dict[str, Any]) -> None:
        rows = [[h["source"], self.tid(h["task_id"]) if h.get("task_id") else "-", h.get("state") or "-",
                 h["text"][:100]] for h in r["results"]]
        heads = ["Source", "Task", "Status", "Memory"]
        down = ", ".join(r["unreachable"])
        if self.fmt == "markdown":
            print(f"## Memory: {r['query']}\n\n" + _md_table(heads, rows)
                  + (f"\n\nUnreachable: {down}" if down else ""))
            return
        from rich.table import Table

        table = Table(title=f"Memory search: {esc(r['query'])}")
        for h in heads:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*(esc(c) for c in row))
        self.out(table)
        if down:
            self.out(f"[yellow]⚠ Not answering, left out: {esc(down)}[/]")

    def pools_ping(self, data: dict[str, Any]) -> None:
        self.text([f"✓ Server answered (version {data['version']})"])

    def pools_task_types(self, data: dict[str, Any]) -> None:
        rows = [[t["name"], "yes" if t["enabled"] else "no", "yes" if t.get("executes_code") else "no",
                 t.get("description") or t.get("error") or ""] for t in data["task_types"]]
        if self.fmt == "markdown":
            print("## Task Types\n\n" + _md_table(["Name", "Enabled", "Executes code", "Description"], rows))
            return
        from rich.table import Table

        table = Table(title="Task Types")
        for h in ("Name", "Enabled", "Executes code", "Description"):
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*(esc(c) for c in row))
        self.out(table)

    def pools_credentials(self, data: dict[str, Any]) -> None:
        rows = [[c["name"], c["source"], ", ".join(c["endpoints"]) or "-", ", ".join(c["kube_contexts"]) or "-"]
                for c in data["credentials"]]
        notes = [f"Kubernetes contexts a pool may choose: {', '.join(data['kube_contexts']) or 'its current one'}",
                 f"Endpoints a client may give: {', '.join(data['allowed_endpoints']) or 'none'}",
                 f"File roots: {', '.join(data['file_roots'])}"]
        headers = ["Credential", "From", "Sent only to", "Kubernetes contexts"]
        if self.fmt == "markdown":
            print("## Credentials\n\n" + _md_table(headers, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes))
            return
        from rich.table import Table

        table = Table(title="Credentials (names only; the operator's settings.yaml holds where each comes from)")
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*(esc(c) for c in row))
        self.out(table)
        for note in notes:
            self.out(esc(note))

    def render(self, tool: str, data: Any) -> None:
        if self.fmt == "json":
            self.json(data)
            return
        getattr(self, tool)(data)
