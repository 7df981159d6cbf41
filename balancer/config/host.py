"""This machine as the cluster file sees it: which addresses are loopback, which are its own, which host it is."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Protocol, TypeVar

import psutil

from balancer.config.basics import LOOPBACK, WILDCARD_HOSTS, ClusterConfigError


class NamedHost(Protocol):
    """A host of the cluster file: a node host or a balancer."""

    name: str
    address: str


HostT = TypeVar("HostT", bound=NamedHost)


def is_loopback(host: str) -> bool:
    """Whether an address to bind is on loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_addresses() -> set[str]:
    """This machine's names and interface addresses (IPv6 in brackets), as a Host header names them."""
    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET:
                names.add(address.address)
            elif address.family == socket.AF_INET6:
                names.add(f"[{address.address.split('%')[0]}]")
    return names


def host_header_values(public_hosts: Sequence[str], host: str, port: int, local_hosts: bool = True) -> list[str]:
    """Host header values a public listener on ``host:port`` accepts (lower case, with and without the port): the
    public host names, loopback's, and this machine's addresses too when it binds every interface and
    ``local_hosts``."""
    names = set(public_hosts) | {"localhost", LOOPBACK, "[::1]"}
    if host in WILDCARD_HOSTS and local_hosts:
        names |= local_addresses()
    else:
        names.add(host)
    values = set()
    for name in names:
        name = name.lower()
        values.add(name)
        if not name.startswith("."):
            values.add(f"{name}:{port}")
    return sorted(values)


def named(hosts: Sequence[HostT], name: str, what: str, section: str) -> HostT:
    """The host of ``hosts`` called ``name`` (``ClusterConfigError`` naming the known ones if none)."""
    for host in hosts:
        if host.name == name:
            return host
    known = ", ".join(host.name for host in hosts) or "none"
    raise ClusterConfigError(f"no {what} {name!r} in the cluster file ({section}: {known})")


def the_one_here(hosts: Sequence[HostT], what: str, flag: str) -> HostT:
    """The host of ``hosts`` whose address is one of this machine's (``ClusterConfigError`` unless exactly one)."""
    mine = local_addresses()
    found = [host for host in hosts if host.address in mine]
    if len(found) != 1:
        which = ", ".join(host.name for host in found) or "none"
        raise ClusterConfigError(f"cannot tell which {what} this machine is (address matches: {which}): "
                                 f"name it with {flag}")
    return found[0]
