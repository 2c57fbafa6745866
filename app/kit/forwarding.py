"""Noticing a server that reads X-Forwarded-For with other trusted proxies than the app's.

uvicorn's proxy-headers middleware runs before the app: for a peer in its `forwarded_allow_ips` it replaces
the client address with one taken from X-Forwarded-For, and the real peer is gone. The app cannot undo it, so
its list of trusted proxies must be the one uvicorn is given. `ForwardedForCheck` logs once when a request
shows that it is not.

How it can tell, and where it cannot. A TCP peer never has port 0, and uvicorn gives port 0 to an address it
took from a hop written without a port: a client with port 0 whose host is such a hop was rewritten. Reading
the same hops with the app's list (right to left, the first hop that is not a trusted proxy) must then give
that host; another answer means uvicorn believed a hop the app would not (or the app trusts no proxy at all).
What it cannot see is the peer uvicorn believed, which the rewrite replaced: a single forged hop sent by a
peer that uvicorn trusts and the app does not looks exactly like a trusted proxy forwarding its client, and is
not noticed; nor is a rewrite from a hop written with a port. Only running the server as documented (the same
list on both sides) defends those.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("atelier.forwarding")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedHosts:
    """A list of trusted proxies matched as uvicorn matches `forwarded_allow_ips`: addresses (compared as IP
    addresses), networks (`10.0.0.0/8`), other literals (a unix socket path) as text, and `*` for all."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = list(entries)
        self.everything = self.entries == ["*"]  # `*` alone; among other entries it is a literal
        self.addresses: set[IPAddress] = set()
        self.networks: list[IPNetwork] = []
        self.literals: set[str] = set()
        for entry in self.entries:
            try:
                if "/" in entry:
                    self.networks.append(ipaddress.ip_network(entry))
                else:
                    self.addresses.add(ipaddress.ip_address(entry))
            except ValueError:
                self.literals.add(entry)

    def __contains__(self, host: str) -> bool:
        if self.everything:
            return True
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return address in self.addresses or any(address in network for network in self.networks)


def forwarded_hops(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, int]]:
    """Every X-Forwarded-For hop as (host, port), all header lines joined in order and split as uvicorn
    splits them; a hop written without a port has port 0."""
    values = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    if not values:
        return []
    return [host_port(item.strip()) for item in ", ".join(values).split(",")]


def host_port(hop: str) -> tuple[str, int]:
    """`203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:4711` or `2001:db8::1` as (host, port), exactly as
    uvicorn splits them (anything else is a host without a port)."""
    if hop.startswith("["):
        end = hop.find("]")
        if end == -1:
            return hop, 0
        host, rest = hop[1:end], hop[end + 1 :]
        if not rest:
            return host, 0
        if not rest.startswith(":"):
            return hop, 0
        return host, _port(rest[1:])
    if hop.count(":") == 1:
        host, port = hop.rsplit(":", 1)
        try:
            return host, int(port)
        except ValueError:
            return hop, 0
    return hop, 0


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def forwarded_client(hops: list[tuple[str, int]], trusted: TrustedHosts) -> str:
    """The client a trusted peer's hops name: read right to left, the first hop that is not a trusted
    proxy; the first hop if every one is (uvicorn's rule too)."""
    if not trusted.everything:
        for host, _port in reversed(hops):
            if host not in trusted:
                return host
    return hops[0][0]


class ForwardedForCheck:
    """Pure ASGI middleware: passes every request through untouched, and logs one warning, the first time a
    request shows the server took the client from X-Forwarded-For trusting a hop `trusted_proxies` does not.
    `setting` names the list in the message."""

    def __init__(self, app: ASGIApp, trusted_proxies: list[str], setting: str) -> None:
        self.app = app
        self.trusted = TrustedHosts(trusted_proxies)
        self.setting = setting
        self.warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.warned and scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client is not None and client[1] == 0:
                self.inspect((client[0], client[1]), scope["headers"])
        await self.app(scope, receive, send)

    def inspect(self, client: tuple[str, int], headers: Iterable[tuple[bytes, bytes]]) -> None:
        hops = forwarded_hops(headers)
        if client not in hops:
            return  # not taken from the header: port 0 from some other server
        believed = forwarded_client(hops, self.trusted)
        if self.trusted.entries and believed == client[0]:
            return
        self.warned = True
        listed = ",".join(self.trusted.entries)
        log.warning(
            "X-Forwarded-For was read by the server trusting a hop that %s (%r) does not: it gave the client "
            "as %s where that list gives %s. The client address, and the generation limit with it, follows "
            "uvicorn's --forwarded-allow-ips: run `atelier serve`, or give uvicorn --forwarded-allow-ips %r "
            "(docs/deployment.md). Logged once.",
            self.setting,
            listed,
            client[0],
            believed,
            listed,
        )
