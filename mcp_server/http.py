"""Serving: streamable HTTP at /mcp with /health beside it, or stdio for an IDE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_server import __version__, runtime
from mcp_server.auth import BearerAuth, check_bind
from mcp_server.server import build_server
from pools.manager import PoolManager
from pools.settings import Settings

log = logging.getLogger("mahavishnu.server")

DEFAULT_PORT = 8680


@dataclass
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    log_level: str = "info"


def public_url(opts: HttpOptions, port: int) -> str:
    scheme = "https" if opts.certfile else "http"
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "::", "") else opts.host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}/mcp"


async def serve_http(settings: Settings, opts: HttpOptions, *, peer: bool = False) -> None:
    """Serve the main server (or, with `peer`, the Session-Buddy-compatible peer) over HTTP."""
    import uvicorn

    check_bind(opts.host, opts.token)
    manager = PoolManager(settings)
    await manager.start()
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

    syncing = asyncio.create_task(periodic_memory_sync(manager)) if (
        settings.memory_sync_interval_s > 0 and not peer) else None
    app = server.streamable_http_app(streamable_http_path="/mcp", host=opts.host)
    asgi = BearerAuth(app, opts.token) if opts.token else app
    config = uvicorn.Config(
        asgi, host=opts.host, port=opts.port, log_level=opts.log_level, lifespan="on",
        ssl_certfile=str(opts.certfile) if opts.certfile else None,
        ssl_keyfile=str(opts.keyfile) if opts.keyfile else None,
    )
    uv = uvicorn.Server(config)
    serve_task = asyncio.create_task(uv.serve())
    try:
        while not uv.started:
            if serve_task.done():
                await serve_task  # surfaces the bind error
                raise OSError(f"could not listen on {opts.host}:{opts.port}")
            await asyncio.sleep(0.02)
        port = uv.servers[0].sockets[0].getsockname()[1]
        url = public_url(opts, port)
        if not peer:  # the CLI finds the main server through this file, never a peer
            runtime.write(settings.home, url, opts.token)
        role = "Session-Buddy peer" if peer else "MCP"
        print(f"mahavishnu serving {role} at {url} (state: {settings.home})", flush=True)
        await serve_task
    finally:
        if syncing is not None:
            syncing.cancel()
        if not peer:
            runtime.remove(settings.home)
        if not serve_task.done():
            uv.should_exit = True
            with contextlib.suppress(Exception):
                await serve_task
        await manager.close()


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


async def serve_stdio(settings: Settings) -> None:
    manager = PoolManager(settings)
    await manager.start()
    try:
        server = build_server(manager, log_level="WARNING")
        await server.run_stdio_async()
    finally:
        await manager.close()


def install_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so the finally blocks stop workers cleanly."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
