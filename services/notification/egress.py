"""Where webhooks may go: public addresses over https, plus an operator's allowlist.

A webhook URL is someone else's input, so every call is checked like this: the host name
is resolved here, every address it resolves to must be allowed, and the call then goes
to the address that was checked (see ``WebhookChannel``), so a DNS answer that changes
between the check and the connect (rebinding) cannot send it anywhere else.

Refused, always: the unspecified address, multicast and the cloud metadata endpoints.
Refused unless an allowlist entry admits them: loopback, private (RFC 1918, ULA),
link-local, shared (CGNAT 100.64/10), reserved and every other non-global address.
Plain http is refused unless the allowlist entry that admits the host says ``http://``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance-metadata endpoints: a call there can hand out the host's credentials.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    }
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class WebhookRefused(Exception):
    """A webhook URL points somewhere webhooks may not go; the message says why."""


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def forbidden_always(address: IPAddress) -> str | None:
    """Why no allowlist can admit ``address``, or None."""
    inner = unwrap(address)
    if address in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if inner.is_unspecified or address.is_unspecified:
        return "the unspecified address"
    if inner.is_multicast or address.is_multicast:
        return "a multicast address"
    return None


def not_public(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is."""
    always = forbidden_always(address)
    if always:
        return always
    # A mapped, 6to4 or NAT64 address ends up at the IPv4 address it carries.
    inner = unwrap(address)
    if inner.is_loopback:
        return "a loopback address"
    if inner.is_link_local:
        return "a link-local address"
    if inner in _CGNAT:
        return "a shared (CGNAT) address"
    if inner.is_reserved:
        return "a reserved address"
    if inner.is_private:
        return "a private address"
    if not inner.is_global:
        return "a non-public address"
    return None


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a host name or an address block, and whether http is allowed."""

    name: str | None = None
    network: IPNetwork | None = None
    http: bool = False

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """``desk.internal``, ``10.20.0.0/16`` or ``127.0.0.1``; an ``http://`` prefix
        also allows plain http (``https://`` is the same as no prefix)."""
        raw = text.strip()
        http = raw.lower().startswith("http://")
        body = raw.split("://", 1)[1] if "://" in raw else raw
        body = body.strip("/").lower()
        if not body:
            raise ValueError(f"empty webhook allowlist entry {text!r}")
        try:
            return cls(network=ipaddress.ip_network(body.strip("[]"), strict=False), http=http)
        except ValueError:
            pass
        if "/" in body or ":" in body:
            raise ValueError(f"webhook allowlist entry {text!r} is neither a host nor a CIDR")
        return cls(name=body.rstrip("."), http=http)

    def admits(self, host: str, address: IPAddress) -> bool:
        """Whether this entry covers a call to ``host`` at ``address``."""
        if self.name is not None:
            return host == self.name
        if self.network is None:
            return False
        return address in self.network or unwrap(address) in self.network


@dataclass(frozen=True)
class EgressPolicy:
    """The rules for one audience's webhooks."""

    allowed: tuple[AllowEntry, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        """Build from allowlist strings (see :meth:`AllowEntry.parse`)."""
        return cls(tuple(AllowEntry.parse(e) for e in entries))

    def _admitting(self, host: str, address: IPAddress) -> list[AllowEntry]:
        return [e for e in self.allowed if e.admits(host, address)]

    def refusal(self, *, scheme: str, host: str, addresses: Sequence[IPAddress]) -> str | None:
        """Why a call to ``host`` resolving to ``addresses`` is refused, or None."""
        if not addresses:
            return f"the host {host} does not resolve"
        shown = "it resolves to" if _is_name(host) else "it is"
        for address in addresses:
            always = forbidden_always(address)
            if always:
                return f"{shown} {always}"
            entries = self._admitting(host, address)
            problem = not_public(address)
            if problem and not entries:
                return f"{shown} {problem}, and is not on the webhook allowlist"
            if scheme == "http" and not any(e.http for e in entries):
                return "webhooks must use https (plain http only to hosts allowlisted with http://)"
        return None

    def check_url(self, url: str) -> Target:
        """The parts of ``url`` that are checked before resolution; raises
        :class:`WebhookRefused` for a bad scheme, a missing host or a forbidden name."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise WebhookRefused(f"the webhook URL is not valid: {exc}") from exc
        if parsed.scheme not in ("http", "https"):
            raise WebhookRefused("webhooks must use https")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise WebhookRefused("the webhook URL has no host")
        if host in METADATA_NAMES:
            raise WebhookRefused("it names a cloud metadata endpoint")
        if (host == "localhost" or host.endswith(".localhost")) and not any(
            e.name == host for e in self.allowed
        ):
            raise WebhookRefused("it names the local host, and is not on the webhook allowlist")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return Target(url=parsed, scheme=parsed.scheme, host=host, port=port)

    def check_static(self, url: str) -> Target:
        """Every check that needs no DNS: :meth:`check_url`, a literal address, and http
        to a host name that no http:// entry could admit."""
        target = self.check_url(url)
        literal = _literal(target.host)
        if literal is not None:
            problem = self.refusal(scheme=target.scheme, host=target.host, addresses=[literal])
            if problem:
                raise WebhookRefused(f"webhook URL refused: {problem}")
        elif target.scheme == "http" and not any(
            e.http and (e.name == target.host or e.network is not None) for e in self.allowed
        ):
            raise WebhookRefused(
                "webhooks must use https (plain http only to hosts allowlisted with http://)"
            )
        return target

    async def resolve(self, url: str, resolver: Resolver) -> PinnedTarget:
        """Check ``url``, resolve it and check every address; the first one is pinned."""
        target = self.check_static(url)
        literal = _literal(target.host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                addresses = await resolver.resolve(target.host, target.port)
            except OSError as exc:
                raise WebhookRefused(f"the host {target.host} does not resolve") from exc
        problem = self.refusal(scheme=target.scheme, host=target.host, addresses=addresses)
        if problem:
            raise WebhookRefused(f"webhook URL refused: {problem}")
        return PinnedTarget(target=target, address=addresses[0], addresses=tuple(addresses))


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL."""

    url: httpx.URL
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class PinnedTarget:
    """A checked webhook URL and the address the call must connect to."""

    target: Target
    address: IPAddress
    addresses: tuple[IPAddress, ...] = field(default=())

    @property
    def connect_url(self) -> httpx.URL:
        """The URL with its host replaced by the pinned address."""
        mapped = self.address.ipv4_mapped if self.address.version == 6 else None
        return self.target.url.copy_with(host=str(mapped or self.address))

    @property
    def host_header(self) -> str:
        """The ``Host`` header the receiver expects (the original name, and port if any)."""
        netloc = self.target.url.netloc.decode("ascii")
        return netloc.rsplit("@", 1)[-1]


class Resolver(Protocol):
    """Turns a host name into the addresses a connection could go to."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``; raises ``OSError`` when it does not resolve."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``, without duplicates, in the resolver's order."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        found: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        return found


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_name(host: str) -> bool:
    return _literal(host) is None
