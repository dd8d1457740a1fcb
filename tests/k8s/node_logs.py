"""Container logs as a kubelet keeps and serves them: CRI-format files, read over HTTPS at
/containerLogs/<namespace>/<pod>/<container> (follow, tailLines, limitBytes, timestamps,
sinceSeconds, sinceTime, previous), which is how `pods/log` reaches us through the API server."""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.k8s.node_api import parse_time

if TYPE_CHECKING:
    from tests.k8s.node_agent import Agent, Container


def read_log_lines(path: Path) -> list[tuple[str, bytes]]:
    """(timestamp, text) per CRI line; a partial line (P) joins the next one as the kubelet does."""
    lines: list[tuple[str, bytes]] = []
    pending = b""
    if not path.exists():
        return lines
    for raw in path.read_bytes().split(b"\n")[:-1]:  # what follows the last newline is still being written
        stamp, _, rest = raw.partition(b" ")
        _stream, _, rest = rest.partition(b" ")
        tag, _, text = rest.partition(b" ")
        if tag == b"P":
            pending += text
            continue
        lines.append((stamp.decode(), pending + text + b"\n"))
        pending = b""
    if pending:
        lines.append(("", pending))
    return lines


class LogHandler(BaseHTTPRequestHandler):
    server: LogServer
    protocol_version = "HTTP/1.1"  # chunked streams, as the kubelet's

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def reply(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server convention
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if url.path in ("/healthz", "/readyz"):
            return self.reply(200, "ok")
        if url.path == "/pods":
            pods = [w.pod for w in self.server.agent.workers_snapshot()]
            return self.reply(200, json.dumps({"kind": "PodList", "apiVersion": "v1", "items": pods}))
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self.reply(404, "404 page not found")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.container_logs(*parts[1:], query)

    def container_logs(self, namespace: str, pod: str, name: str, query: dict[str, str]) -> None:
        worker = self.server.agent.worker_for(namespace, pod)
        if worker is None:
            return self.reply(404, f'pod "{pod}" does not exist')
        c = next((c for c in worker.all() if c.name == name), None)
        if c is None:
            return self.reply(404, f'container "{name}" not found in pod "{pod}"')
        previous = query.get("previous") == "true"
        restarts = c.restarts - 1 if previous else c.restarts
        if previous and not c.last_state.get("terminated"):
            return self.reply(400, f'previous terminated container "{name}" in pod "{pod}" not found')
        if not previous and not c.log_path(restarts).exists():
            if "terminated" in c.state:
                return self.reply(400, f'container "{name}" in pod "{pod}" is terminated')
            reason = c.state.get("waiting", {}).get("reason", "ContainerCreating")
            text = {"ErrImagePull": "image can't be pulled",
                    "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
            return self.reply(400, f'container "{name}" in pod "{pod}" is waiting to start: {text}')
        self.stream(c, restarts, query, follow=query.get("follow") == "true" and not previous)

    def stream(self, c: Container, restarts: int, query: dict[str, str], follow: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        since = time.time() - int(query["sinceSeconds"]) if "sinceSeconds" in query else None
        if "sinceTime" in query:
            since = parse_time(query["sinceTime"][:19] + "Z")
        path, sent, written = c.log_path(restarts), 0, 0
        while True:
            done = not follow or c.restarts != restarts or not c.running()  # checked before the read
            lines = read_log_lines(path)
            fresh = lines[sent:]
            if sent == 0 and "tailLines" in query:
                fresh = fresh[len(fresh) - min(len(fresh), int(query["tailLines"])):]
            sent = len(lines)
            for stamp, text in fresh:
                if since is not None and stamp and parse_time(stamp[:19] + "Z") < since:
                    continue
                chunk = (stamp.encode() + b" " if query.get("timestamps") == "true" else b"") + text
                if limit is not None:
                    chunk = chunk[: max(0, limit - written)]
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    written += len(chunk)
            if done or (limit is not None and written >= limit):
                break
            self.server.agent.wait_logs()
        self.wfile.write(b"0\r\n\r\n")


class LogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        super().__init__((agent.config.address, agent.config.port), LogHandler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=agent.config.ca_file)
        ctx.load_cert_chain(agent.config.cert_file, agent.config.key_file)
        ctx.verify_mode = ssl.CERT_REQUIRED  # only the API server (its kubelet client cert) may read logs
        self.socket = ctx.wrap_socket(self.socket, server_side=True)


# -- the agent ---------------------------------------------------------------------------------------
