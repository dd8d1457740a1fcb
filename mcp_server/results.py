"""Values too large for one tool answer: resource links out, paged resources/read in.

    tool output ──shape()──> within inline_result_max_bytes? ──yes──> inline, as before
                               │ no: the largest task results and payloads (and a map_reduce
                               ▼     result) become  "result": null, "result_link": {uri, size}
    client ──resources/read mahavishnu://tasks/{id}/result──────────> first page, _meta next
           ──resources/read mahavishnu://tasks/{id}/result?offset=N─> ... until next is null

A Python MCP client refuses any server-sent event over 1 MiB, so a page's text is cut to stay
well under that once JSON-escaped. Task values are read from the store in slices (never
loaded whole); a reduced map_reduce result, which belongs to no task, is kept as a file under
$MAHAVISHNU_HOME/results until the retention period ends.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from pools import jsontext
from pools.models import Link
from pools.store import Store

URI_TEMPLATE_TASK = "mahavishnu://tasks/{task_id}/{field}"
URI_TEMPLATE_DISTRIBUTION = "mahavishnu://distributions/{distribution_id}/result"
URI_RE = re.compile(r"^mahavishnu://(tasks|distributions)/([A-Za-z0-9_]{1,64})/(result|payload)"
                    r"(?:\?offset=(\d{1,15}))?$")
PAGE_BYTES = 768 * 1024
EVENT_BUDGET = 900 * 1024  # a page once JSON-escaped, below the 1 MiB an SSE client takes
TEXT_COPY_MAX = 64 * 1024  # answers up to this also carry their JSON as text, for text-only hosts
_CONTROL = re.compile(r"[\x00-\x1f]")
META_NEXT, META_SIZE, META_OFFSET = "mahavishnu/next", "mahavishnu/size", "mahavishnu/offset"


class NotFound(LookupError):
    pass


class Blobs:
    """Reduced map_reduce results too large to inline, one ASCII JSON file each."""

    def __init__(self, root: Path, retention_s: float) -> None:
        self.root = root
        self.retention_s = retention_s

    def put(self, text: str) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self.prune()
        blob_id = "dist_" + uuid.uuid4().hex
        tmp = self.root / f".{blob_id}.tmp"
        tmp.write_text(text, encoding="ascii")
        tmp.replace(self.root / f"{blob_id}.json")
        return blob_id

    def page(self, blob_id: str, offset: int, length: int) -> tuple[int, str] | None:
        path = self.root / f"{blob_id}.json"
        try:
            with path.open("rb") as fh:
                total = os.fstat(fh.fileno()).st_size
                fh.seek(offset)
                return total, fh.read(length).decode("ascii")
        except FileNotFoundError:
            return None

    def prune(self) -> None:
        if not self.root.is_dir():
            return
        cutoff = time.time() - self.retention_s
        for path in self.root.glob("dist_*.json"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


@dataclass
class _Candidate:
    holder: dict[str, Any]
    field: str
    task_id: str | None  # None: a reduced result, kept as a blob
    size: int


def _candidates(node: Any, found: list[_Candidate]) -> None:
    if isinstance(node, list):
        for item in node:
            _candidates(item, found)
        return
    if not isinstance(node, dict):
        return
    task_id = node.get("task_id")
    if isinstance(task_id, str):
        for field in ("result", "payload"):
            if node.get(field) not in (None, {}) and f"{field}_link" in node:
                found.append(_Candidate(node, field, task_id, jsontext.size(node[field])))
    elif "shards" in node and node.get("result") is not None and "result_link" in node:
        found.append(_Candidate(node, "result", None, jsontext.size(node["result"])))
    for key, value in node.items():
        if key not in ("result", "payload"):
            _candidates(value, found)


def shape(data: dict[str, Any], limit: int, blobs: Blobs,
          text: str | None = None) -> tuple[dict[str, Any], list[Link], str | None]:
    """Move the largest values out of `data` (in place) until it fits in `limit` bytes (of its
    compact UTF-8 JSON, `text` if the caller has it). Returns the data, the links, and the JSON
    text when nothing moved."""
    if text is None:
        text = jsontext.dumps(data)
    total = len(text.encode())
    if total <= limit:
        return data, [], text
    found: list[_Candidate] = []
    _candidates(data, found)
    links = []
    for c in sorted(found, key=lambda c: -c.size):
        if total <= limit:
            break
        value = c.holder[c.field]
        if c.task_id is None:
            # (a value may be as the model held it, a set or a datetime: in JSON form first)
            uri = URI_TEMPLATE_DISTRIBUTION.format(distribution_id=blobs.put(json.dumps(to_jsonable_python(value))))
        else:
            uri = URI_TEMPLATE_TASK.format(task_id=c.task_id, field=c.field)
        link = Link(uri=uri, size=c.size)
        c.holder[c.field] = {} if c.field == "payload" else None
        c.holder[f"{c.field}_link"] = link.model_dump(mode="json")
        links.append(link)
        total -= c.size
    return data, links, None


def _fit(chunk: str) -> str:
    """Cut a page so that its JSON-escaped form stays within EVENT_BUDGET bytes."""
    while True:
        escaped = (len(chunk.encode()) + chunk.count('"') + chunk.count("\\")
                   + 5 * len(_CONTROL.findall(chunk)))
        if escaped <= EVENT_BUDGET:
            return chunk
        chunk = chunk[: max(1, int(len(chunk) * EVENT_BUDGET / escaped * 0.95))]


def read_page(store: Store, blobs: Blobs, uri: str) -> tuple[str, dict[str, Any]]:
    """One page of a linked value: its text and the _meta that says where the next page is."""
    match = URI_RE.match(uri)
    if match is None:
        raise NotFound(f"no resource {uri!r}; links look like mahavishnu://tasks/<task id>/result")
    kind, ident, field, offset_text = match.groups()
    offset = int(offset_text or 0)
    if kind == "tasks":
        got = store.task_text(ident, field, offset, PAGE_BYTES)
    else:
        got = blobs.page(ident, offset, PAGE_BYTES) if field == "result" else None
    if got is None:
        raise NotFound(f"no {kind[:-1]} {ident!r} (finished tasks and results are kept for the retention period)")
    total, chunk = got
    if total == 0:  # the value is null
        return "null", {META_SIZE: 4, META_OFFSET: 0, META_NEXT: None}
    chunk = _fit(chunk)
    end = offset + len(chunk.encode())
    base = uri.partition("?")[0]
    return chunk, {META_SIZE: total, META_OFFSET: offset, META_NEXT: f"{base}?offset={end}" if end < total else None}
