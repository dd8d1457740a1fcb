"""Egress: may a tool make the server connect to this URL?

    URL ─> shape (http/https, a host, no user info) ─> resolve the host (in a thread)
        ─> any address link-local or cloud metadata (169.254.0.0/16, fd00:ec2::254)?  refuse, always
        ─> named by the operator (a credential's endpoints, memory_endpoint)?  allow
        ─> matches allowed_endpoints (URL prefixes, hosts, '*.domain', networks)?  allow
        ─> refuse, naming the setting that allows it

Every outbound connection a tool causes passes here first: a peer at register, memory sync,
discovery probes, a Kubernetes API URL given as endpoint. A network entry (CIDR) admits a host
name only when every address it resolves to is inside; the default, loopback only, therefore
admits `localhost` and nothing a DNS record can point elsewhere. Redirects are not followed to
another host (see peer_client).
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from pools.credentials import url_under
from pools.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALWAYS_REFUSED = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                  ipaddress.ip_network("fd00:ec2::254/128"))
RESOLVE_TIMEOUT = 5.0


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _refused(address: IPAddress) -> bool:
    return any(address in net for net in ALWAYS_REFUSED)


async def resolve(host: str) -> list[IPAddress]:
    """Every address `host` names; the lookup runs in the loop's thread pool, never on the loop."""
    literal = _address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise InvalidInput(f"cannot resolve host {host!r}: {exc or 'timed out'}") from exc
    out: list[IPAddress] = []
    for info in infos:
        address = _address(str(info[4][0]))
        if address is not None and address not in out:
            out.append(address)
    return out


def _entry_admits(entry: str, url: str, host: str, addresses: list[IPAddress]) -> bool:
    if "://" in entry:
        return url_under(url, entry)
    if "/" in entry or _address(entry) is not None:  # a network or one address
        try:
            net = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            return False
        return bool(addresses) and all(a in net for a in addresses)
    return fnmatch.fnmatchcase(host, entry.lower())


class Egress:
    def __init__(self, allowed: Iterable[str], operator_named: Iterable[str]) -> None:
        self.allowed = list(allowed)
        self.operator_named = list(operator_named)

    async def check(self, url: str, *, field: str = "endpoint") -> None:
        """Raise InvalidInput (naming `field`) unless the server may connect to `url`."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise InvalidInput(f"{field} {url!r} is not a valid URL: {exc}", field=field) from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"{field} must be an http:// or https:// URL with a host, got {url!r}", field=field)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise InvalidInput(f"{field} must not carry user info (user:password@); the operator's credentials "
                               "supply authentication", field=field)
        host = parts.hostname.lower()
        try:
            addresses = await resolve(host)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field=field) from exc
        bad = [str(a) for a in addresses if _refused(a)]
        if bad:
            raise InvalidInput(f"{field} {url} resolves to {', '.join(bad)}, a link-local or cloud-metadata "
                               "address; the server never connects there", field=field)
        if any(url_under(url, p) for p in self.operator_named):
            return
        if any(_entry_admits(entry, url, host, addresses) for entry in self.allowed):
            return
        raise InvalidInput(
            f"{field} {url} is not an endpoint the operator allows (allowed_endpoints: "
            f"{', '.join(self.allowed) or 'none'}; plus the endpoints of declared credentials); the operator can "
            "add it to allowed_endpoints or to a credential's endpoints in settings.yaml", field=field)
