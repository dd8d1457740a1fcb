"""Bind rules and bearer-token checking for the HTTP transport."""

from __future__ import annotations

import hmac
import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from pools.errors import InvalidInput

PUBLIC_PATHS = frozenset({"/health", "/healthz", "/mcp/health"})


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """A server reachable from other machines must demand a token."""
    if not is_loopback(host) and not token:
        raise InvalidInput(
            f"refusing to listen on {host} without a token: anyone who can reach it could run tasks. "
            "Pass --token or set MAHAVISHNU_TOKEN (clients send it as 'Authorization: Bearer <token>'), "
            "or bind 127.0.0.1.", field="host")


class BearerAuth:
    """Reject every request except the public health paths without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized: send 'Authorization: Bearer <token>' "
                                    "(the server's --token / MAHAVISHNU_TOKEN)"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
