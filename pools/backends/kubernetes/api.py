"""Reaching the API server: the client from the pool's configuration, and its errors in words.

Every error a user sees carries the API's own Status `message` and `reason` (an API server says
what is wrong; the HTTP reason phrase does not). Transient errors (no connection, 429 with
Retry-After, 5xx other than an object being too large) are told apart so callers back off and
retry instead of failing the pool.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from pools.credentials import KubeAccess
from pools.errors import PoolUnavailable
from pools.models import PoolConfig

TIMEOUT = (3, 15)  # seconds to connect, to read: an unreachable cluster fails fast, never hangs


@dataclass
class Clients:
    core: Any
    batch: Any
    apps: Any
    autoscaling: Any
    where: str


def connect(config: PoolConfig, access: KubeAccess | None = None) -> Clients:
    """Blocking: builds the API clients (reads the kubeconfig). `access` is what the manager
    checked against the operator's settings (pools.credentials, pools.egress)."""
    from kubernetes import client
    from kubernetes import config as kube_config

    a = access or KubeAccess()
    cfg = client.Configuration()
    if a.host:  # an API URL the operator allows, with the credential bound to it
        cfg.host = a.host
        cfg.verify_ssl = a.host.startswith("https://")
        if a.ca_file:  # a private CA, as the operator configured it with the credential
            cfg.ssl_ca_cert = a.ca_file
    else:
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=a.kubeconfig, context=a.context, client_configuration=cfg)
        except Exception as kube_error:  # no kubeconfig: inside a cluster, perhaps
            try:
                kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except Exception:
                raise PoolUnavailable(f"no Kubernetes configuration: {kube_error}; the operator sets kubeconfig "
                                      "(or KUBECONFIG) and kube_contexts in settings.yaml",
                                      field="kube_context") from kube_error
    if a.token:
        cfg.api_key = {"authorization": a.token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
    cfg.retries = 0  # we retry ourselves, with backoff and Retry-After (set before the client is built)
    api_client = client.ApiClient(cfg)
    where = config.endpoint or config.kube_context or "the configured cluster"
    return Clients(client.CoreV1Api(api_client), client.BatchV1Api(api_client), client.AppsV1Api(api_client),
                   client.AutoscalingV2Api(api_client), where)


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and status else None


def api_status(exc: BaseException) -> tuple[str, str]:
    """The (reason, message) of the Status object the API server answered with, if any."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str) and body.strip().startswith("{"):
        try:
            status = json.loads(body)
        except ValueError:
            status = {}
        if isinstance(status, dict):
            return str(status.get("reason") or getattr(exc, "reason", "") or ""), str(status.get("message") or "")
    return str(getattr(exc, "reason", "") or ""), str(body or "")[:300] if body else ""


def retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def transient(exc: BaseException) -> bool:
    """Worth retrying: the request may succeed later without anyone changing anything."""
    status = status_of(exc)
    if status is None:
        return not isinstance(exc, PoolUnavailable)
    if status == 429:
        return True
    if status >= 500:
        _, message = api_status(exc)
        return "too large" not in message.lower()  # an oversized object stays oversized
    return False


def explain(exc: BaseException, doing: str, where: str, namespace: str) -> PoolUnavailable:
    """A client error as one sentence: what we were doing, where, and what the API said."""
    if isinstance(exc, PoolUnavailable):
        return exc
    status = status_of(exc)
    if status is None:
        return PoolUnavailable(f"cannot reach the Kubernetes API at {where} while {doing}: "
                               f"{type(exc).__name__}: {str(exc)[:300]}")
    reason, message = api_status(exc)
    said = f"{status} {reason}: {message}" if message else f"{status} {reason}".strip()
    if status == 401:
        return PoolUnavailable(f"Kubernetes at {where} rejected the credentials (401) while {doing}: {message}")
    if status == 403:
        return PoolUnavailable(f"Kubernetes at {where} forbids {doing} in namespace {namespace!r} ({said}); "
                               "grant the pool's account the Role in kubernetes/rbac.yaml or choose another "
                               "--namespace")
    return PoolUnavailable(f"Kubernetes at {where} answered {said} while {doing}")


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """One API call in a worker thread (the client is synchronous), with the standard timeouts."""
    return await asyncio.to_thread(fn, *args, _request_timeout=TIMEOUT, **kwargs)
