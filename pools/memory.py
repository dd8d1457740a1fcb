"""Pool memory: every finished task is a memory record; conversations are what a peer keeps.

    tasks (finished) ──index_pending──> memory_fts ──search──> local hits, merged with each peer's
                     └──unsynced──> Session-Buddy store_conversation ──> synced_at

A memory record is the finished task row itself (pool, task, type, state, duration, summary):
nothing extra is written on the hot path. Full-text indexing (SQLite FTS5) catches up in
batches before a search or a sync, so thousands of tasks a second cost no tokenizing.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

MEMORY_SCHEMA = """
CREATE INDEX IF NOT EXISTS tasks_unindexed ON tasks(finished_at) WHERE indexed = 0 AND finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_unsynced ON tasks(finished_at) WHERE synced_at IS NULL AND finished_at IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(summary, task_type, state, task_id, pool, content='');
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT UNIQUE,
    content TEXT NOT NULL,
    project TEXT,
    metadata TEXT,
    tags TEXT,
    created REAL NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS conversations_fts USING fts5(
    content, project, tags, content='conversations', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS conversations_ai AFTER INSERT ON conversations BEGIN
    INSERT INTO conversations_fts(rowid, content, project, tags) VALUES (new.id, new.content, new.project, new.tags);
END;
"""


def fts_query(text: str) -> str | None:
    """User text -> an FTS5 query where every word must match; None when there is no word.
    Quoting each word keeps FTS5 syntax (quotes, colons, NEAR, *) from breaking the query."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{w}"' for w in words) if words else None


def memory_text(record: dict[str, Any]) -> str:
    """The one-paragraph form of a memory record that peers store and search."""
    duration = "" if record.get("duration") is None else f" in {record['duration']:.2f}s"
    return (f"[mahavishnu] {record['task_type']} task {record['task_id']} on pool {record['pool_name']} "
            f"({record['pool_id']}) {record['state']}{duration}: {record['summary']}")


Writer = Callable[[str, tuple[Any, ...]], sqlite3.Cursor]


class MemoryLog:
    """Memory tables on the store's connection; writes go through the store's grouped commits."""

    def __init__(self, db: sqlite3.Connection, write: Writer, flush: Callable[[], None]) -> None:
        self.db = db
        self.write = write
        self.flush = flush  # before any read: the store's buffered writes run, a commit under way lands
        columns = [row[1] for row in db.execute("PRAGMA table_info(memory_fts)")]
        if columns and "task_id" not in columns:  # an index from before ids and pools were searchable
            db.execute("DROP TABLE memory_fts")
            db.execute("UPDATE tasks SET indexed = 0 WHERE indexed = 1")
        db.executescript(MEMORY_SCHEMA)

    # -- task memory ----------------------------------------------------------------------
    _RECORD = ("SELECT t.rowid AS id, t.task_id, t.pool_id, coalesce(p.name, t.pool_id) AS pool_name, t.task_type, "
               "t.state, t.duration, coalesce(t.summary, t.state) AS summary, t.finished_at AS created, "
               "t.synced_at FROM tasks t LEFT JOIN pools p ON p.pool_id = t.pool_id")

    def index_pending(self, batch: int = 5000) -> int:
        """Add finished tasks not yet in the full-text index; returns how many."""
        self.flush()
        total = 0
        while True:
            # Task ids, pool names and ids, and task types are searchable too, not only summaries.
            rows = self.db.execute(
                "SELECT t.rowid, coalesce(t.summary, t.state), t.task_type, t.state, t.task_id, "
                "coalesce(p.name || ' ', '') || t.pool_id FROM tasks t LEFT JOIN pools p ON p.pool_id = t.pool_id "
                "WHERE t.indexed = 0 AND t.finished_at IS NOT NULL LIMIT ?", (batch,)).fetchall()
            if not rows:
                return total
            for row in rows:
                self.write("INSERT INTO memory_fts(rowid, summary, task_type, state, task_id, pool) "
                           "VALUES (?, ?, ?, ?, ?, ?)", tuple(row))
                self.write("UPDATE tasks SET indexed = 1 WHERE rowid = ?", (row[0],))
            total += len(rows)

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        match = fts_query(query)
        if match is None:
            return []
        self.index_pending()
        rows = self.db.execute(
            f"SELECT r.*, -bm25(memory_fts) AS score FROM memory_fts JOIN ({self._RECORD}) r "
            "ON r.id = memory_fts.rowid WHERE memory_fts MATCH ? ORDER BY score DESC LIMIT ?",
            (match, limit)).fetchall()
        return [dict(r) for r in rows]

    def unsynced(self, limit: int) -> list[dict[str, Any]]:
        self.flush()
        rows = self.db.execute(
            f"{self._RECORD} WHERE t.synced_at IS NULL AND t.finished_at IS NOT NULL ORDER BY t.finished_at LIMIT ?",
            (limit,))
        return [dict(r) for r in rows]

    def count_unsynced(self) -> int:
        self.flush()
        return int(self.db.execute(
            "SELECT count(*) FROM tasks WHERE synced_at IS NULL AND finished_at IS NOT NULL").fetchone()[0])

    def mark_synced(self, task_ids: list[str]) -> None:
        now = time.time()
        for task_id in task_ids:
            self.write("UPDATE tasks SET synced_at = ? WHERE task_id = ?", (now, task_id))

    # -- conversations a peer keeps ---------------------------------------------------------
    def store_conversation(self, content: str, project: str | None, metadata: dict[str, Any] | None,
                           tags: list[str] | None) -> int:
        """Keep a conversation; a repeat of the same task's memory (same metadata.task_id) is dropped."""
        key = str(metadata["task_id"]) if metadata and metadata.get("task_id") else None
        self.flush()
        if key is not None:
            row = self.db.execute("SELECT id FROM conversations WHERE dedup_key = ?", (key,)).fetchone()
            if row is not None:
                return int(row[0])
        cur = self.write("INSERT INTO conversations (dedup_key, content, project, metadata, tags, created) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (key, content, project, json.dumps(metadata) if metadata else None,
                          " ".join(tags) if tags else None, time.time()))
        return int(cur.lastrowid or 0)

    def search_conversations(self, query: str, limit: int = 10, min_score: float = 0.0,
                             project: str | None = None) -> list[dict[str, Any]]:
        match = fts_query(query)
        if match is None:
            return []
        self.flush()
        sql = ("SELECT c.*, -bm25(conversations_fts) AS score FROM conversations_fts "
               "JOIN conversations c ON c.id = conversations_fts.rowid WHERE conversations_fts MATCH ?")
        params: list[Any] = [match]
        if project:
            sql += " AND c.project = ?"
            params.append(project)
        sql += " ORDER BY score DESC LIMIT ?"
        params.append(limit)
        out = []
        for r in self.db.execute(sql, params):
            if r["score"] < min_score:
                continue
            out.append({"id": r["id"], "content": r["content"], "project": r["project"],
                        "metadata": json.loads(r["metadata"]) if r["metadata"] else {},
                        "tags": r["tags"].split() if r["tags"] else [], "score": round(r["score"], 4),
                        "created": r["created"]})
        return out
