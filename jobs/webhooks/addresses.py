"""What an IP address is, in words: the special-purpose ranges a webhook must not reach by default.

Everything here works on ``ipaddress`` objects: the caller parses a literal or a resolver's answer first, so no
spelling of an address (decimal, octal, hex, IPv4-mapped IPv6) is ever matched as a string.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

METADATA_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(net) for net in (
    "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean instance metadata
    "169.254.170.2/32",    # AWS ECS task metadata
    "fd00:ec2::254/128",   # AWS instance metadata over IPv6
    "168.63.129.16/32",    # Azure wire server (a public address)
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "192.0.0.192/32",      # Oracle Cloud metadata
))
"""Cloud metadata addresses: refused always, even when an allow entry covers them."""

METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
})
"""Host names of cloud metadata services: refused always, whatever they resolve to."""

SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")


def normalized(address: IPAddress) -> IPAddress:
    """``address`` as the host it reaches: an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is its IPv4 address."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IPAddress) -> list[IPv4Address]:
    """IPv4 addresses an IPv6 address carries to a gateway: 6to4, Teredo (server and client), NAT64."""
    if not isinstance(address, IPv6Address):
        return []
    found: list[IPv4Address] = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in NAT64_NETWORK:
        found.append(IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def special_purpose(address: IPAddress) -> str | None:
    """Why ``address`` is no public internet host (``"loopback"``, ``"private network"`` …), or None if it is one."""
    address = normalized(address)
    checks = (
        (address.is_unspecified, "unspecified address"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address in SHARED_NETWORK, "shared (carrier-grade NAT) network"),
        (isinstance(address, IPv6Address) and address.is_site_local, "site-local"),
        (address.is_reserved, "reserved address"),
        (address.is_private, "private network"),
        (not address.is_global, "not a public address"),
    )
    return next((words for hit, words in checks if hit), None)


def is_metadata(address: IPAddress) -> bool:
    """True for a cloud metadata address, in any of its spellings."""
    address = normalized(address)
    return any(address in network for network in METADATA_NETWORKS)
