"""`mahavishnu shell`: a Python prompt with `maha_app` ready and top-level `await`, as the user
documentation's troubleshooting steps use it (`>>> await aggregator.collect_and_sync(maha_app.pool_manager)`).

The prompt reads in the main thread; everything awaited runs on one event loop in a second thread, so
the pool manager, its workers and its store live on that loop from the first `await` to the end.
"""

from __future__ import annotations

import ast
import asyncio
import code
import concurrent.futures
import inspect
import threading
import types
from typing import Any

BANNER = """Mahavishnu shell (Python {version}); `await` works at the prompt.
  maha_app               the application; maha_app.pool_manager is the pool manager on {home}
                         (it starts on first use and then owns that state directory, so stop a
                         server on it first or use `mahavishnu pools ...` against the server instead)
  MemoryAggregator       from mahavishnu.pools: collect_and_sync(), cross_pool_search()
  PoolConfig, PoolType   pool settings
Ctrl-D leaves (the pool manager is closed, its workers stopped)."""


class AwaitingConsole(code.InteractiveConsole):
    """An interactive console whose code may `await`: a statement compiled as a coroutine runs on the
    shell's loop and the prompt waits for it (Ctrl-C cancels it)."""

    def __init__(self, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(namespace)
        self.loop = loop
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

    def runcode(self, code_object: types.CodeType) -> None:
        future: concurrent.futures.Future[Any] | None = None
        try:
            result = types.FunctionType(code_object, self.locals)()  # type: ignore[arg-type]
            if inspect.iscoroutine(result):
                future = asyncio.run_coroutine_threadsafe(result, self.loop)
                future.result()
        except SystemExit:
            raise
        except KeyboardInterrupt:
            if future is not None:
                future.cancel()
            self.write("\nKeyboardInterrupt\n")
        except BaseException:
            self.showtraceback()


def run_shell() -> None:
    import sys

    from mahavishnu.core.app import MahavishnuApp
    from mahavishnu.pools import MemoryAggregator, PoolConfig, PoolType

    loop = asyncio.new_event_loop()
    # Workers are spawned from this thread (their parent-death signal follows it), so it lives
    # as long as the shell does.
    runner = threading.Thread(target=loop.run_forever, name="mahavishnu-shell-loop", daemon=True)
    runner.start()
    maha_app = MahavishnuApp()
    namespace: dict[str, Any] = {"__name__": "__console__", "asyncio": asyncio, "maha_app": maha_app,
                                 "MemoryAggregator": MemoryAggregator, "PoolConfig": PoolConfig,
                                 "PoolType": PoolType}
    console = AwaitingConsole(namespace, loop)
    banner = BANNER.format(version=sys.version.split()[0], home=maha_app.settings.home)
    try:
        console.interact(banner=banner, exitmsg="")
    finally:
        asyncio.run_coroutine_threadsafe(maha_app.close(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=10)
