"""Named credentials: the operator's secrets, each sent only where the operator bound it.

    settings.yaml                          tool input
    credentials:                           {"credential": "buddy"}   a name, never a value,
      buddy: {env: BUDDY_TOKEN,                                      a variable or a path
              endpoints: [https://b:8678/]}
                 │
                 └─> for_endpoint(url, name) ─> the secret, only when url is under a bound prefix
                     for_context(ctx, name)  ─> the secret, only when ctx is a bound context

A client names a credential; the server checks the binding and reads the secret itself. With
no name, an endpoint gets the credential bound to it (the longest matching prefix), if any. The
server's own token (MAHAVISHNU_TOKEN, or whatever `serve --token` was given) is never handed out.
Reading is blocking (a file may sit on a slow disk): async callers run these in a thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field

from pools.errors import InvalidInput
from pools.settings import SERVER_TOKEN_VARIABLES, Credential

MAX_SECRET_BYTES = 64 << 10
HOW_TO_DECLARE = ("the operator declares credentials in settings.yaml: "
                  "`credentials: {NAME: {env: VARIABLE, endpoints: [URL prefix]}}`")


class CredentialInfo(BaseModel):
    """What a client may know about a credential: its name and where it may be sent, never its value."""

    name: str
    source: str = Field(description="env or file (the variable's or file's name is the operator's business)")
    endpoints: list[str] = Field(default_factory=list, description="URL prefixes it is sent to.")
    kube_contexts: list[str] = Field(default_factory=list, description="Kubernetes contexts it authenticates.")


@dataclass(frozen=True)
class KubeAccess:
    """How a Kubernetes pool reaches its cluster, as the operator allowed it: an API URL (host), or
    the operator's kubeconfig (None: KUBECONFIG, ~/.kube/config, then in-cluster) and a context;
    `token`, when set, is the bearer token of a credential bound to that URL or context."""

    host: str | None = None
    token: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    ca_file: str | None = None  # verifies an https host (the credential's ca_file)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def url_under(url: str, prefix: str) -> bool:
    """True when `url` is at or below `prefix`: same scheme, host and port, and the path under the
    prefix's path on a segment boundary (`https://a/x` covers `https://a/x/y`, not `https://a/xy`)."""
    try:
        u, p = urlsplit(url), urlsplit(prefix)
        u_port, p_port = u.port or _default_port(u.scheme), p.port or _default_port(p.scheme)
    except ValueError:
        return False
    if u.username is not None or u.password is not None:
        return False
    if any(segment in (".", "..") for segment in unquote(u.path).split("/")):
        return False  # a client may normalise `/bound/../x` to `/x`: never count it as under `/bound/`
    if (u.scheme.lower(), (u.hostname or "").lower(), u_port) != (p.scheme.lower(), (p.hostname or "").lower(),
                                                                  p_port):
        return False
    base = p.path.rstrip("/")
    return u.path == base or u.path.startswith(base + "/") or (not base and u.path == "")


class Credentials:
    def __init__(self, declared: dict[str, Credential]) -> None:
        self._declared = dict(declared)
        self._forbidden: set[str] = set()

    def forbid(self, value: str | None) -> None:
        """A secret never to be sent, whatever a credential says (the server's own token)."""
        if value:
            self._forbidden.add(value)

    def describe(self) -> list[CredentialInfo]:
        return [CredentialInfo(name=name, source="env" if c.env else "file", endpoints=list(c.endpoints),
                               kube_contexts=list(c.kube_contexts))
                for name, c in sorted(self._declared.items())]

    def endpoint_prefixes(self) -> Iterable[str]:
        for c in self._declared.values():
            yield from c.endpoints

    def _get(self, name: str, field: str) -> Credential:
        try:
            return self._declared[name]
        except KeyError:
            known = ", ".join(sorted(self._declared)) or "none are declared"
            raise InvalidInput(f"no credential named {name!r} (known: {known}); {HOW_TO_DECLARE}; "
                               "`mahavishnu pools credentials` lists them", field=field) from None

    def for_endpoint(self, url: str, name: str | None = None, *, field: str = "credential") -> str | None:
        """The secret to send to `url`: the named credential when it is bound there (else an error),
        or with no name the one bound there, or None."""
        if name is not None:
            cred = self._get(name, field)
            if not any(url_under(url, p) for p in cred.endpoints):
                raise InvalidInput(f"credential {name!r} is not bound to {url}; it may be sent only to "
                                   f"{', '.join(cred.endpoints) or 'no endpoint'} (the operator binds it with "
                                   "`endpoints:` in settings.yaml)", field=field)
            return self._read(name, cred, field)
        bound = self._bound_to(url)
        return None if bound is None else self._read(*bound, field)

    def _bound_to(self, url: str) -> tuple[str, Credential] | None:
        """The credential bound to `url` by the longest prefix (the first by name on a tie)."""
        best: tuple[int, str, Credential] | None = None
        for cname, cred in sorted(self._declared.items()):
            for prefix in cred.endpoints:
                if url_under(url, prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), cname, cred)
        return None if best is None else (best[1], best[2])

    def ca_for_endpoint(self, url: str, name: str | None = None) -> str | None:
        """The CA bundle of the credential `for_endpoint` picks for `url`, if it names one."""
        if name is not None:
            cred = self._declared.get(name)
        else:
            bound = self._bound_to(url)
            cred = None if bound is None else bound[1]
        return str(cred.ca_file) if cred is not None and cred.ca_file else None

    def for_context(self, context: str, name: str, *, field: str = "credential") -> str:
        cred = self._get(name, field)
        if context not in cred.kube_contexts:
            raise InvalidInput(f"credential {name!r} is not bound to Kubernetes context {context!r}; it is bound "
                               f"to {', '.join(cred.kube_contexts) or 'no context'}", field=field)
        return self._read(name, cred, field)

    def _read(self, name: str, cred: Credential, field: str) -> str:
        if cred.env is not None:
            if cred.env in SERVER_TOKEN_VARIABLES:  # validated at load too; kept here as the last gate
                raise InvalidInput(f"credential {name!r} names the server's own token", field=field)
            value = os.environ.get(cred.env, "").strip()
            where = f"environment variable {cred.env}"
        else:
            assert cred.file is not None
            value, where = _read_secret_file(str(cred.file)), f"file {cred.file}"
        if not value:
            raise InvalidInput(f"credential {name!r} is empty: the operator must set {where}", field=field)
        if value in self._forbidden or value in (os.environ.get(v) for v in SERVER_TOKEN_VARIABLES):
            raise InvalidInput(f"credential {name!r} holds the server's own token, which is never sent anywhere",
                               field=field)
        return value


def _read_secret_file(path: str) -> str:
    """The first line of a regular file, at most 64 KiB (a FIFO or device would block or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InvalidInput(f"credential file {path} cannot be opened: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"credential file {path} is not a regular file")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise InvalidInput(f"credential file {path} is larger than {MAX_SECRET_BYTES} bytes")
    lines = data.decode("utf-8", errors="replace").strip().splitlines()
    return lines[0].strip() if lines else ""
