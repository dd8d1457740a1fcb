"""List, then watch: the pool's view of its Jobs and Pods, kept current by the API server's events.

    list (labelSelector=pool) ──> cache + resourceVersion ──> watch from it (bookmarks on)
         ▲                                                    │ ADDED/MODIFIED/DELETED ─> on_change
         │ 410 Gone (the version was compacted away)          │ BOOKMARK ─> newer resourceVersion
         └────────────────────────────────────────────────────┤ stream ends (timeoutSeconds) ─> watch again
                  errors: back off (Retry-After first), retry ┘

One list and one long-lived watch per kind, whatever the number of Jobs: the request rate stays
flat as a pool grows. The official client's `watch.Watch` is blocking, so each informer streams
in a thread of its own (never the shared executor, which the API calls need) and hands events to
the event loop. `Health` turns persistent trouble into degraded, then failed, and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from pools.backends.kubernetes.api import call, retry_after, status_of, transient
from pools.models import PoolStatus

OnChange = Callable[[str, Any], None]  # (event type, object)


class Health:
    """How the API has been answering, per source: trouble that persists degrades the pool after
    `degraded_after` seconds and fails it after `failed_after`; one success clears it. Refusals
    that waiting will not cure (401, 403) fail it at once, and are retried all the same."""

    def __init__(self, degraded_after: float, failed_after: float) -> None:
        self.degraded_after = degraded_after
        self.failed_after = failed_after
        self._since: dict[str, float] = {}
        self._why: dict[str, str] = {}
        self._fatal: set[str] = set()

    def ok(self, source: str) -> None:
        self._since.pop(source, None)
        self._why.pop(source, None)
        self._fatal.discard(source)

    def trouble(self, source: str, why: str, *, fatal: bool = False) -> None:
        self._since.setdefault(source, time.monotonic())
        self._why[source] = why
        if fatal:
            self._fatal.add(source)

    def status(self) -> tuple[PoolStatus, str | None]:
        if not self._since:
            return PoolStatus.RUNNING, None
        source = min(self._since, key=self._since.__getitem__)
        lasted = time.monotonic() - self._since[source]
        why = self._why[source]
        if self._fatal or lasted >= self.failed_after:
            fatal = next(iter(self._fatal), source)
            return PoolStatus.FAILED, self._why.get(fatal, why)
        if lasted >= self.degraded_after:
            return PoolStatus.DEGRADED, f"{why} (retrying for {lasted:.0f}s)"
        return PoolStatus.RUNNING, None


class Informer:
    def __init__(self, kind: str, list_fn: Callable[..., Any], namespace: str, selector: str,
                 on_change: OnChange, health: Health, explain: Callable[[BaseException, str], str], *,
                 backoff: float = 0.5, max_backoff: float = 30.0, watch_timeout: int = 240) -> None:
        self.kind = kind
        self.objects: dict[str, Any] = {}
        self.synced = asyncio.Event()
        self._list_fn = list_fn
        self._ns = namespace
        self._selector = selector
        self._on_change = on_change
        self._health = health
        self._explain = explain
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._watch_timeout = watch_timeout
        self._stopped = False
        self._watch: Any = None
        self._thread_done: asyncio.Future[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self.relists = 0  # how often the cache was rebuilt (410 Gone, errors): for tests and stats

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"informer-{self.kind}")

    async def stop(self) -> None:
        self._stopped = True
        if self._watch is not None:
            self._watch.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        version: str | None = None
        delay = self._backoff
        while not self._stopped:
            try:
                if version is None:
                    version = await self._list()
                version = await self._stream(version)
                self._health.ok(self.kind)
                delay = self._backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopped:
                    return
                if status_of(exc) == 410:  # our version is older than the server keeps: list again
                    version = None
                    continue
                why = self._explain(exc, f"watching {self.kind}")
                self._health.trouble(self.kind, why, fatal=status_of(exc) in (401, 403))
                wait = retry_after(exc) if status_of(exc) == 429 else None
                await asyncio.sleep(wait if wait is not None else delay)
                delay = min(delay * 2, self._max_backoff)
                if not transient(exc):
                    version = None

    async def _list(self) -> str:
        listing = await call(self._list_fn, self._ns, label_selector=self._selector)
        self.relists += 1
        fresh = {item.metadata.name: item for item in listing.items or []}
        gone = [name for name in self.objects if name not in fresh]
        for name in gone:
            self._apply("DELETED", self.objects[name])
        for item in fresh.values():
            self._apply("MODIFIED" if item.metadata.name in self.objects else "ADDED", item)
        self._health.ok(self.kind)
        self.synced.set()
        return str(listing.metadata.resource_version or "")

    async def _stream(self, version: str) -> str:
        """Watch from `version` until the server ends the stream; returns the newest version seen."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()

        def finish(result: str | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result or version)

        def stream() -> None:
            from kubernetes import watch

            latest = version
            try:
                w = watch.Watch()  # type: ignore[no-untyped-call]
                self._watch = w
                if self._stopped:
                    return
                events = w.stream(  # type: ignore[no-untyped-call]
                    self._list_fn, self._ns, label_selector=self._selector, resource_version=version,
                    allow_watch_bookmarks=True, timeout_seconds=self._watch_timeout,
                    _request_timeout=(3, self._watch_timeout + 15))
                for event in events:
                    if self._stopped:
                        break
                    latest = w.resource_version or latest
                    if event["type"] == "BOOKMARK":
                        loop.call_soon_threadsafe(self._health.ok, self.kind)
                    else:
                        loop.call_soon_threadsafe(self._apply, event["type"], event["object"])
            except BaseException as exc:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                    loop.call_soon_threadsafe(finish, None, exc)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finish, latest, None)

        threading.Thread(target=stream, name=f"k8s-watch-{self.kind}", daemon=True).start()
        return await done

    def _apply(self, kind: str, obj: Any) -> None:
        if self._stopped:
            return
        name = obj.metadata.name
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        self._on_change(kind, obj)
