"""Where a webhook may go: a webhook is never a way into the operator's network.

``TargetGuard.check_url`` runs when a job is submitted (the URL's shape and any literal address, no DNS);
``TargetGuard.resolve`` runs before every delivery attempt: it resolves the host name once, refuses the target if
ANY address is denied, and returns the vetted addresses. Delivery connects to those addresses only (no second
lookup, so no DNS rebinding), with the original ``Host`` header and TLS checked against the host name.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio.to_thread
import httpx
from pydantic import BaseModel, ConfigDict, field_validator

from .addresses import METADATA_HOSTS, IPAddress, IPNetwork, embedded_ipv4, is_metadata, normalized, special_purpose

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
"""One label of a host name after IDNA encoding; the name itself is split on dots, never matched whole."""

Resolver = Callable[[str, int], Iterable[str]]
"""(host name, port) -> the addresses it resolves to, as strings; blocking (run in a worker thread)."""


class TargetRefused(ValueError):
    """The webhook URL is not allowed; the message says why, in words for the person who submitted it."""


class ResolutionFailed(OSError):
    """The host name did not resolve now (may succeed on a later attempt)."""


def canonical_host(host: str) -> str:
    """A host name as compared and resolved: lower case, without the trailing dot of an absolute name."""
    return host.lower().removesuffix(".")


def is_network(entry: str) -> bool:
    """True if ``entry`` is an address or CIDR network (``10.0.0.0/8``, ``::1``), False for a host name."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


def host_matches(host: str, pattern: str) -> bool:
    """``pattern`` is a host name, or ``*.example.com`` for every name below example.com."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


class WebhookTargetPolicy(BaseModel):
    """The operator's rules for webhook targets (docs/jobs.md "Webhooks").

    ``allow`` and ``deny`` hold CIDR networks (``127.0.0.1/32``, ``fd12::/64``) and host names (``hooks.lan``,
    ``*.lan``). The deny list wins; cloud metadata addresses and names are refused even when allowed. An allowed
    network admits its addresses despite the default refusals (loopback, private …); an allowed host name admits
    whatever it resolves to, metadata and denied addresses excepted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_http: bool = False
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @field_validator("allow", "deny")
    @classmethod
    def _entries(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            name = canonical_host(entry).removeprefix("*.")
            if not is_network(entry) and not all(LABEL.fullmatch(label) for label in name.split(".")):
                raise ValueError(f"{entry!r} is neither a network (10.0.0.0/8) nor a host name (hooks.lan)")
        return tuple(entry if is_network(entry) else canonical_host(entry) for entry in entries)

    @property
    def schemes(self) -> frozenset[str]:
        return frozenset({"https", "http"} if self.allow_http else {"https"})

    def networks(self, entries: tuple[str, ...]) -> list[IPNetwork]:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries if is_network(entry)]

    def host_refusal(self, host: str) -> str | None:
        """Why the host name ``host`` (canonical) is refused by name, or None."""
        if host in METADATA_HOSTS:
            return "a cloud metadata service"
        if any(host_matches(host, entry) for entry in self.deny if not is_network(entry)):
            return "on the operator's deny list"
        return None

    def host_allowed(self, host: str) -> bool:
        return any(host_matches(host, entry) for entry in self.allow if not is_network(entry))

    def address_refusal(self, address: IPAddress, host_allowed: bool = False) -> str | None:
        """Why a webhook may not connect to ``address``, or None if it may."""
        address = normalized(address)
        if is_metadata(address):
            return "a cloud metadata address"
        if any(address in network for network in self.networks(self.deny)):
            return "on the operator's deny list"
        for carried in embedded_ipv4(address):
            if (reason := self.address_refusal(carried, host_allowed)) is not None:
                return f"carries {carried} ({reason})"
        if host_allowed or any(address in network for network in self.networks(self.allow)):
            return None
        return special_purpose(address)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, through the system's resolver (``getaddrinfo``)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ResolutionFailed(f"{host} does not resolve ({error})") from error
    return [sockaddr[0] for *_, sockaddr in answers]


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells (any form ``getaddrinfo`` reads as a number: ``0x7f.1``, ``2130706433``), or
    None for a host name. Parsed without DNS (``AI_NUMERICHOST``), by the same parser a connection would use."""
    try:
        answers = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(answers[0][4][0].partition("%")[0])


@dataclass(frozen=True)
class VettedTarget:
    """A webhook URL and the addresses it may be delivered to, vetted once."""

    url: httpx.URL
    host: str
    """The canonical host name (or address), for TLS SNI and certificate checks."""
    addresses: tuple[IPAddress, ...]
    literal: bool
    """True when the URL names an address rather than a host name."""

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    def url_for(self, address: IPAddress) -> httpx.URL:
        """The URL with its host replaced by ``address``: a connection to it needs no DNS."""
        return self.url.copy_with(host=str(address))


class TargetGuard:
    """Checks webhook URLs against a ``WebhookTargetPolicy``; ``resolver`` answers host names (injectable)."""

    def __init__(self, policy: WebhookTargetPolicy | None = None, resolver: Resolver = system_resolver) -> None:
        self.policy = policy or WebhookTargetPolicy()
        self.resolver = resolver

    def check_url(self, url: str) -> httpx.URL:
        """The parsed URL if its shape and any literal address are allowed; ``TargetRefused`` says why not."""
        if len(url) > MAX_URL_LENGTH:
            raise TargetRefused(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as error:
            raise TargetRefused(f"the webhook URL is not a valid URL ({error})") from error
        if parsed.scheme not in self.policy.schemes:
            raise TargetRefused("the webhook URL must start with " + " or ".join(
                f"{scheme}://" for scheme in sorted(self.policy.schemes, reverse=True)))
        if not parsed.host:
            raise TargetRefused("the webhook URL has no host")
        if parsed.userinfo:
            raise TargetRefused("the webhook URL must not carry a user name or password")
        if parsed.port is not None and not 1 <= parsed.port <= 65535:
            raise TargetRefused("the webhook URL's port must be between 1 and 65535")
        host = canonical_host(parsed.raw_host.decode("ascii"))
        if (address := literal_address(host)) is not None:
            if (reason := self.policy.address_refusal(address)) is not None:
                raise TargetRefused(f"the webhook URL's address {address} is refused: {reason}")
            return parsed
        labels = host.split(".")
        if len(host) > MAX_HOST_LENGTH or not all(LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
            raise TargetRefused(f"the webhook URL's host {host[:80]!r} is not a valid host name")
        if (reason := self.policy.host_refusal(host)) is not None:
            raise TargetRefused(f"the webhook URL's host {host} is refused: {reason}")
        return parsed

    async def resolve(self, url: str) -> VettedTarget:
        """The target with every address its host resolves to, once; refused if ANY address is denied."""
        parsed = self.check_url(url)
        host = canonical_host(parsed.raw_host.decode("ascii"))
        if (address := literal_address(host)) is not None:
            return VettedTarget(parsed, host, (normalized(address),), literal=True)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        answers = await anyio.to_thread.run_sync(self.resolver, host, port)
        addresses = tuple(dict.fromkeys(normalized(ipaddress.ip_address(answer.partition("%")[0]))
                                        for answer in answers))
        if not addresses:
            raise ResolutionFailed(f"{host} resolves to no address")
        allowed_by_name = self.policy.host_allowed(host)
        for address in addresses:
            if (reason := self.policy.address_refusal(address, allowed_by_name)) is not None:
                logger.info("webhook target %s refused: resolves to %s (%s)", host, address, reason)
                raise TargetRefused(f"the webhook URL's host {host} resolves to {address}, which is refused: {reason}")
        return VettedTarget(parsed, host, addresses, literal=False)
