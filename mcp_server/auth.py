"""Bind rules, bearer-token checking and Host/Origin checks for the HTTP transport.

    request ─> LoopbackGuard (bound to loopback: Host must name loopback, Origin too if sent;
               every path, /metrics included: a DNS-rebinding page cannot drive or read us)
            ─> BearerAuth (with a token: `Authorization: Bearer <token>`, scheme in any case;
               the health paths stay public)
            ─> the MCP app
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from pools.errors import InvalidInput

PUBLIC_PATHS = frozenset({"/health", "/healthz", "/mcp/health"})
MIN_TOKEN_LENGTH = 16
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@functools.lru_cache(maxsize=256)  # asked for every request's Host; a client sends the same few
def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x) and the loopback names."""
    if host.lower() in ("localhost", "ip6-localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_token(token: str | None, option: str = "--token") -> None:
    """A token must be long enough not to be guessed, and sendable as one header value."""
    if token is None:
        return
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip() or any(c.isspace() or ord(c) < 32 for c in token):
        raise InvalidInput(f"{option} must be at least {MIN_TOKEN_LENGTH} characters without spaces (got "
                           f"{len(token)}); make a good one with: {MAKE_TOKEN}", field="token")


def check_bind(host: str, token: str | None) -> None:
    """A server reachable from other machines must demand a token; any token must be a good one."""
    check_token(token)
    if not is_loopback(host) and not token:
        raise InvalidInput(
            f"refusing to listen on {host} without a token: anyone who can reach it could run tasks. "
            "Pass --token or set MAHAVISHNU_TOKEN (clients send it as 'Authorization: Bearer <token>'), "
            "or bind 127.0.0.1.", field="host")


class BearerAuth:
    """Reject every request except the public health paths without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = given.partition(b" ")
        # RFC 7235: the scheme is case-insensitive ("bearer" is as good as "Bearer").
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized: send 'Authorization: Bearer <token>' "
                                    "(the server's --token / MAHAVISHNU_TOKEN)"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def _host_of(value: str) -> str:
    """The host part of a Host header or an Origin's authority: `[::1]:8680` -> `::1`."""
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class LoopbackGuard:
    """On a loopback bind, refuse requests whose Host (or Origin, when sent) is not a loopback
    name: a web page the user visits could otherwise reach us through DNS rebinding."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1")
        problem = None
        if not is_loopback(_host_of(host)):
            problem = f"Host {host!r} is not a loopback address"
        elif origin and origin != "null":
            scheme, _, authority = origin.partition("://")
            if scheme not in ("http", "https") or not is_loopback(_host_of(authority)):
                problem = f"Origin {origin!r} is not a loopback address"
        elif origin == "null":
            problem = "Origin 'null' is refused"
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": f"forbidden: {problem}; this server listens on loopback only"}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
