"""Serving: streamable HTTP at /mcp with /health beside it, or stdio for an IDE.

A stop signal (SIGTERM, SIGINT) is a clean stop, never a crash:

    signal ──> no new connections; no queued task starts ──> up to `grace` s: calls in flight
           and running tasks finish ──> what still runs is left to the next start's
           reconciliation, with the reason ──> server.json removed, store closed ──> exit 0

A second signal cuts the grace short. The port is bound before the state directory is
taken, so a busy port fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_server import __version__, runtime
from mcp_server.auth import BearerAuth, LoopbackGuard, check_bind, is_loopback
from mcp_server.events import RETRY_MS, BoundedEventStore
from mcp_server.server import build_server
from pools.errors import PoolError
from pools.manager import PoolManager
from pools.settings import Settings

log = logging.getLogger("mahavishnu.server")

DEFAULT_PORT = 8680
DEFAULT_GRACE = 5.0  # seconds running tasks get to finish when the server is told to stop


class PortBusy(PoolError):
    code = "port_busy"


@dataclass
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    log_level: str = "info"
    grace: float = DEFAULT_GRACE


def public_url(opts: HttpOptions, port: int) -> str:
    scheme = "https" if opts.certfile else "http"
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "::", "") else opts.host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}/mcp"


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a busy port is one clear error before anything starts.
    Made as asyncio makes its own (proto IPPROTO_TCP), so that accepted connections get
    TCP_NODELAY: without it every small response waits ~40 ms for a delayed ACK."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             proto=socket.IPPROTO_TCP)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as exc:
        if sock is not None:
            sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):  # taken, or a privileged port
            raise PortBusy(f"cannot listen on {host}:{port}: {why}; choose another --port or stop what uses it",
                           field="port") from exc
        raise PortBusy(f"cannot listen on {host}:{port}: {why}", field="host") from exc


class StopSignal:
    """The first SIGTERM/SIGINT starts a clean stop (and calls `on_stop`); a second one hurries it."""

    def __init__(self, grace: float, on_stop: Any) -> None:
        self.grace = grace
        self.on_stop = on_stop
        self.signal: int | None = None
        self.at = 0.0
        self.hurry = False

    def received(self, sig: int) -> None:
        if self.signal is None:
            self.signal, self.at = sig, time.monotonic()
            self.on_stop()
        else:
            self.hurry = True

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "stop"

    def remaining(self) -> float:
        return 0.0 if self.hurry else max(0.0, self.at + self.grace - time.monotonic())


async def stop_cleanly(manager: PoolManager, stop: StopSignal) -> None:
    """Give running tasks what is left of the grace period, then close, saying why to the next start."""
    reason = None
    if stop.signal is not None:
        left = await manager.drain(stop.remaining())
        reason = f"the server stopped ({stop.name}, grace {stop.grace:g}s) while it ran"
        if left:
            print(f"mahavishnu stopped ({stop.name}): {left} running task(s) left to the next start's "
                  "reconciliation", file=sys.stderr, flush=True)
    await manager.close(reason)


def uvicorn_server(config: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, except that a stop signal ends in a clean exit instead of being raised again
        once it has shut down (which made `serve` die of its own SIGTERM, exit -15). The signal
        also reaches our StopSignal, through the event loop (stop_signals)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server(config)


def http_app(manager: PoolManager, settings: Settings, opts: HttpOptions, peer: bool) -> Any:
    """The ASGI app: MCP at /mcp, health and metrics beside it, behind the bearer check."""
    if peer:
        from mcp_server.peer import build_peer

        server = build_peer(manager)
    else:
        server = build_server(manager, log_level=opts.log_level.upper())  # type: ignore[arg-type]

    async def health(request: Request) -> Response:
        report = manager.health()
        return JSONResponse({"status": "ok", "pools": report.status, "active_pools": report.active_pools,
                             "version": __version__, "role": "peer" if peer else "server"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(manager.telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)

    # /mcp/health too: the user docs probe a Session-Buddy there.
    for path, handler in (("/health", health), ("/healthz", healthz), ("/mcp/health", health),
                          ("/metrics", metrics)):
        server.custom_route(path, methods=["GET"])(handler)
    from mcp.server.transport_security import TransportSecuritySettings

    # Resumable streams (mcp_server/events.py): a client whose stream broke mid-call reconnects
    # with Last-Event-ID and gets the progress and result it missed. One Host/Origin check for every
    # path and every loopback address (LoopbackGuard), instead of the SDK's, which covers /mcp on
    # 127.0.0.1, localhost and ::1 only.
    app = server.streamable_http_app(streamable_http_path="/mcp", host=opts.host, event_store=BoundedEventStore(),
                                     retry_interval=RETRY_MS, transport_security=TransportSecuritySettings(
                                         enable_dns_rebinding_protection=False))
    asgi = BearerAuth(app, opts.token) if opts.token else app
    return LoopbackGuard(asgi) if is_loopback(opts.host) else asgi


async def serve_http(settings: Settings, opts: HttpOptions, *, peer: bool = False) -> None:
    """Serve the main server (or, with `peer`, the Session-Buddy-compatible peer) over HTTP."""
    import uvicorn

    check_bind(opts.host, opts.token)
    sock = listen(opts.host, opts.port)
    manager = PoolManager(settings)
    manager.credentials.forbid(opts.token)  # the server's own token is never handed to a peer or cluster
    main = asyncio.current_task()
    assert main is not None
    uv: Any = None

    def on_stop() -> None:
        manager.hold()
        if not peer:  # no new CLI command should find a server that no longer takes calls
            runtime.remove(settings.home)
        if uv is None:
            main.cancel()  # still starting: nothing to drain
        else:
            uv.should_exit = True

    stop = StopSignal(opts.grace, on_stop)
    syncing: asyncio.Task[None] | None = None
    serve_task: asyncio.Task[None] | None = None
    with stop_signals(stop):
        try:
            await manager.start()
            config = uvicorn.Config(
                http_app(manager, settings, opts, peer), host=opts.host, port=opts.port,
                log_level=opts.log_level, lifespan="on",
                ssl_certfile=str(opts.certfile) if opts.certfile else None,
                ssl_keyfile=str(opts.keyfile) if opts.keyfile else None,
                timeout_graceful_shutdown=max(1, round(opts.grace)),  # calls in flight, during the grace
            )
            uv = uvicorn_server(config)
            if settings.memory_sync_interval_s > 0 and not peer:
                syncing = asyncio.create_task(periodic_memory_sync(manager))
            serve_task = asyncio.create_task(uv.serve(sockets=[sock]))
            while not uv.started:
                if serve_task.done():
                    await serve_task  # surfaces a start-up error
                    if stop.signal is not None:
                        return
                    raise PortBusy(f"could not serve on {opts.host}:{opts.port}")
                await asyncio.sleep(0.02)
            url = public_url(opts, sock.getsockname()[1])
            if not peer and stop.signal is None:  # the CLI finds the main server by this file, never a peer
                runtime.write(settings.home, url, opts.token)
            role = "Session-Buddy peer" if peer else "MCP"
            print(f"mahavishnu serving {role} at {url} (state: {settings.home})", flush=True)
            await serve_task
        except asyncio.CancelledError:
            if stop.signal is None:
                raise
            main.uncancel()
        finally:
            if syncing is not None:
                syncing.cancel()
            if not peer:
                runtime.remove(settings.home)
            if serve_task is not None and not serve_task.done():
                uv.should_exit = True
                with contextlib.suppress(Exception):
                    await serve_task
            sock.close()
            await stop_cleanly(manager, stop)


async def periodic_memory_sync(manager: PoolManager) -> None:
    """The server setting memory_sync_interval_s: push new task memory on a timer."""
    from pools import aggregator

    while True:
        await asyncio.sleep(manager.settings.memory_sync_interval_s)
        try:
            report = await aggregator.sync(manager)
        except Exception:  # a sync failure must never take the server down
            log.exception("periodic memory sync failed")
            continue
        if report.error:
            log.warning("memory sync to %s stopped: %s (%d left)", report.endpoint, report.error, report.remaining)
        elif report.pushed:
            log.info("memory sync pushed %d record(s) to %s", report.pushed, report.endpoint)


async def serve_stdio(settings: Settings, grace: float = DEFAULT_GRACE) -> None:
    """Serve one client over stdin/stdout; its EOF, SIGTERM or SIGINT stops the server cleanly."""
    manager = PoolManager(settings)
    main = asyncio.current_task()
    assert main is not None

    def on_stop() -> None:
        manager.hold()
        main.cancel()

    stop = StopSignal(grace, on_stop)
    with stop_signals(stop):
        try:
            await manager.start()
            await build_server(manager, log_level="WARNING", follow_client_roots=True).run_stdio_async()
        except asyncio.CancelledError:
            if stop.signal is None:
                raise
            main.uncancel()
        finally:
            await stop_cleanly(manager, stop)


@contextlib.contextmanager
def stop_signals(stop: StopSignal) -> Iterator[None]:
    """SIGTERM and SIGINT go to `stop` for as long as this lasts (uvicorn takes them over while
    it serves, and hands them to `stop` too)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.received, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
