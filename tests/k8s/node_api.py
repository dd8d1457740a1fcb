"""The node agent's plumbing: its configuration, and JSON over HTTPS to the API server."""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def log(*parts: object) -> None:
    print(datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3], *parts, file=sys.stderr, flush=True)


@dataclass
class AgentConfig:
    api: str                     # https://127.0.0.1:PORT
    token: str                   # the node's bearer token (user system:node:<name>)
    ca_file: str                 # verifies the API server, and signs the API server's client cert
    cert_file: str               # this agent's serving certificate (IP SAN = address)
    key_file: str
    node_name: str
    address: str                 # InternalIP, and where the log server listens
    port: int
    root: str                    # pod directories, logs
    cpu: str = "4"
    memory: str = "8Gi"
    pods: str = "110"
    env: dict[str, str] = field(default_factory=dict)  # the "image" environment

    @classmethod
    def load(cls, path: str) -> AgentConfig:
        return cls(**json.loads(Path(path).read_text()))


class ApiError(Exception):
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {body.get('message', body)}")
        self.code = code


class Api:
    """JSON over HTTPS with a bearer token: raw objects, so no field the server sends is lost."""

    def __init__(self, url: str, token: str, ca_file: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def _connect(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        conn = self._connect(60)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None if body is None else json.dumps(body).encode()
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = json.loads(resp.read() or b"{}")
            if resp.status >= 300:
                raise ApiError(resp.status, payload)
            return payload  # type: ignore[no-any-return]
        finally:
            conn.close()

    def watch(self, path: str) -> Any:
        """Yield watch events until the server ends the stream."""
        conn = self._connect(None)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            if resp.status >= 300:
                raise ApiError(resp.status, json.loads(resp.read() or b"{}"))
            for line in resp:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
