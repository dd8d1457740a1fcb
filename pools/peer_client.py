"""Talking to a Session-Buddy-style MCP peer over streamable HTTP.

Each call opens its own MCP session: a peer that restarts is simply reached again on the
next call, and no long-lived connection can wedge. Replies are read the way both our
peer (structured JSON) and a real Session-Buddy (human-readable text) answer: `isError`
first, then structured content, then text (parsed as JSON when it is JSON).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pools.errors import PoolUnavailable


@dataclass
class PeerReply:
    is_error: bool
    data: dict[str, Any] | None
    text: str
    linked: dict[str, str] = field(default_factory=dict)  # link uri -> the JSON text read from it

    @property
    def error(self) -> dict[str, Any]:
        """An error result's {code, message, field} (our servers' shape), or {} for any other answer."""
        err = (self.data or {}).get("error") if self.is_error else None
        return err if isinstance(err, dict) else {}

    @property
    def code(self) -> str | None:
        code = self.error.get("code")
        return code if isinstance(code, str) else None

    @property
    def message(self) -> str:
        if self.data and isinstance(self.data.get("error"), (str, dict)):
            err = self.data["error"]
            return str(err.get("message", err)) if isinstance(err, dict) else err
        return self.text.strip() or "(no message)"


def tls_verify(url: str) -> Any:
    """No TLS context for plain http (it costs start-up time); for https the system trust store,
    or the CA bundle named by MAHAVISHNU_CA_CERT (for peers with a private CA)."""
    if not url.startswith("https://"):
        return False
    ca = os.environ.get("MAHAVISHNU_CA_CERT")
    if ca:
        import ssl

        return ssl.create_default_context(cafile=ca)
    return True


def health_url(endpoint: str) -> str:
    """`http://host:8678/mcp` -> `http://host:8678/health` (Session-Buddy serves it at the root)."""
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc, "/health", "", ""))


def read_reply(result: Any) -> PeerReply:
    """An MCP CallToolResult, read the way every caller here needs it. Our servers answer an
    error with no structured content and the JSON text {"error": {code, message, field}}
    (specs/tools.md), so JSON text becomes `data` too."""
    text = "\n".join(getattr(c, "text", "") for c in (result.content or []))
    data = result.structured_content
    if data is None and text.strip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        data = parsed if isinstance(parsed, dict) else None
    return PeerReply(bool(result.is_error), data, text)


async def read_linked(client: Any, uri: str) -> str:
    """The whole JSON text behind a result link, page by page (each page's _meta names the next)."""
    parts: list[str] = []
    next_uri: str | None = uri
    while next_uri:
        page = (await client.read_resource(next_uri)).contents[0]
        parts.append(page.text)
        following = (page.meta or {}).get("mahavishnu/next")
        next_uri = following if isinstance(following, str) else None
    return "".join(parts)


async def follow_links(client: Any, node: Any, linked: dict[str, str] | None = None) -> dict[str, str]:
    """Put every linked value (`result_link`, `payload_link`) of a tool answer back in place, read
    over the same session; returns {uri: JSON text}, the bytes the server holds."""
    linked = {} if linked is None else linked
    if isinstance(node, list):
        for item in node:
            await follow_links(client, item, linked)
    elif isinstance(node, dict):
        for key in [k for k in node if k.endswith("_link")]:
            link = node[key]
            if isinstance(link, dict) and isinstance(link.get("uri"), str):
                text = linked.get(link["uri"]) or await read_linked(client, link["uri"])
                linked[link["uri"]] = text
                node[key.removesuffix("_link")] = json.loads(text)
        for key, value in node.items():
            if isinstance(value, (dict, list)) and not key.endswith("_link"):
                await follow_links(client, value, linked)
    return linked


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class PeerClient:
    def __init__(self, endpoint: str, token: str | None = None, connect_timeout: float = 5.0,
                 resumable: bool = False) -> None:
        self.endpoint = endpoint
        self.token = token
        self.connect_timeout = connect_timeout
        # resumable: speak the session protocol, whose streams a server with an event store lets a
        # client resume after a dropped connection (the stateless 2026 protocol cancels instead).
        self.mode = "legacy" if resumable else "auto"

    def _http(self, read_timeout: float) -> Any:
        import httpx2

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        http = httpx2.AsyncClient(headers=headers, verify=tls_verify(self.endpoint),
                                  timeout=httpx2.Timeout(self.connect_timeout, read=read_timeout))
        http.refused = None  # type: ignore[attr-defined]

        async def note_refusal(response: Any) -> None:
            # The SDK turns any HTTP error into one generic JSON-RPC error; keep the status that
            # says the peer wants (another) token, so the user reads that instead.
            if response.status_code in (401, 403):
                http.refused = response.status_code  # type: ignore[attr-defined]

        http.event_hooks["response"].append(note_refusal)
        return http

    def _refused(self, http: Any, during: str) -> PoolUnavailable | None:
        status = getattr(http, "refused", None)
        if status is None:
            return None
        why = ("it did not accept the token of the operator's credential bound to this endpoint" if self.token
               else "it wants a bearer token, and the operator has no credential bound to this endpoint")
        return PoolUnavailable(f"peer {self.endpoint} refused {during} with HTTP {status}: {why}; "
                               "`mahavishnu pools credentials` lists the bindings")

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float = 30.0,
                   progress: Any = None, follow: bool = False) -> PeerReply:
        """Call one tool (progress: an async callback for its progress notifications; follow: read
        linked large values back in, over the same session). Transport failures raise
        PoolUnavailable naming the peer."""
        from mcp import Client, MCPError
        from mcp.client.streamable_http import streamable_http_client
        from mcp.types import INTERNAL_ERROR

        http = self._http(timeout + 5)
        try:
            async with http, Client(streamable_http_client(self.endpoint, http_client=http),
                                    mode=self.mode) as client:
                # The SDK re-checks each result against the tool's output schema and lists every
                # tool first to get it: a round trip and a jsonschema compile per session. Our
                # callers read replies field by field and a real Session-Buddy has no schemas.
                client.session.validate_tool_result = _trust  # type: ignore[method-assign]
                result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout,
                                                progress_callback=progress)
                reply = read_reply(result)
                if follow and not reply.is_error and reply.data is not None:
                    reply.linked = await follow_links(client, reply.data)
        except PoolUnavailable:
            raise
        except Exception as exc:
            cause = _root_cause(exc)
            # A JSON-RPC error the peer sent (method not found, bad params) is an answer; the SDK's
            # INTERNAL_ERROR stands for an HTTP failure (401, 5xx) on the way, which is not.
            if isinstance(cause, MCPError) and cause.error.code != INTERNAL_ERROR:
                return PeerReply(True, None, f"{tool}: {cause}")
            refused = self._refused(http, tool)
            if refused is not None:
                raise refused from exc
            raise PoolUnavailable(f"peer {self.endpoint} unreachable or broken during {tool}: "
                                  f"{type(cause).__name__}: {cause}") from exc
        return reply

    async def tool_names(self, timeout: float = 10.0) -> set[str]:
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        http = self._http(timeout)
        try:
            async with http, Client(streamable_http_client(self.endpoint, http_client=http)) as client:
                listed = await client.list_tools()
        except Exception as exc:
            cause = _root_cause(exc)
            refused = self._refused(http, "to list its tools")
            if refused is not None:
                raise refused from exc
            raise PoolUnavailable(f"peer {self.endpoint} did not list its tools: "
                                  f"{type(cause).__name__}: {cause}") from exc
        return {t.name for t in listed.tools}

    def health(self, timeout: float = 3.0) -> tuple[bool, str]:
        """GET /health at the peer's root (blocking; run it in a thread)."""
        request = urllib.request.Request(health_url(self.endpoint))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with _SAME_HOST_OPENER.open(request, timeout=timeout) as response:
                return 200 <= response.status < 300, f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return False, f"HTTP {exc.code}"
        except OSError as exc:
            return False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only on the same scheme, host and port: a peer cannot bounce the probe
    (and its token) to another host."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urlsplit(newurl)[:2] != urlsplit(req.full_url)[:2]:
            raise urllib.error.HTTPError(req.full_url, code, f"refused redirect to another host: {newurl}",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_SAME_HOST_OPENER = urllib.request.build_opener(_SameHostRedirects)


async def _trust(name: str, result: Any) -> None:
    return None
