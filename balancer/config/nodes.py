"""A cluster's nodes and hosts: each node's parts (web front, worker), node hosts, balancer hosts, the floating address.

``balancer.config.cluster_fields`` lists them in a cluster; checks across them (names, ports) are there too.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, model_validator

from balancer.config.basics import LOOPBACK, NAME_PATTERN
from balancer.config.basics import StrictModel as _Model


class NodeHostSpec(_Model):
    """A machine that runs node parts under its own sidecar (``launch.py --role node``), without HAProxy.

    Its sidecar's *host agent* answers HAProxy's agent checks on ``address:host_agent_port`` with
    each part's state (``balancer.multihost.host_agent``), so that every balancer learns within
    ``health.host_agent_interval`` that a part is starting, draining, restarting or dead.
    """

    name: str = Field(pattern=NAME_PATTERN, description="What nodes name in their node_host.")
    address: str = Field(description="This host's address as the balancers reach it: its parts and its agent.")
    host_agent_port: int = Field(
        8406, ge=1, le=65535, description="TCP port of its sidecar's host agent (HAProxy agent-check)."
    )
    cert_file: Path | None = Field(
        None, description="With tls: this host's certificate and key (python -m balancer.multihost.certs --node "
        "NAME), on this host; its workers and web fronts serve with it. Default: NAME.pem beside tls.ca_file.",
    )
    queue_cert_file: Path | None = Field(
        None, description="With tls and a TLS worker queue: the client certificate and key this host's web fronts "
        "present to it (python -m balancer.multihost.certs --node NAME), on this host. Default: NAME-queue.pem beside "
        "tls.ca_file.",
    )


class BalancerHostSpec(_Model):
    """A balancer host (``launch.py --role balancer``) of a pair sharing the floating address."""

    name: str = Field(pattern=NAME_PATTERN, description="This balancer's name (launch.py --balancer NAME).")
    address: str = Field(description="Its own address on the floating address's network: VRRP goes between these.")
    priority: int = Field(
        100, ge=1, le=254, description="VRRP priority: the highest healthy balancer takes the address first."
    )


class FloatingAddressSpec(_Model):
    """The address clients use, held by one balancer at a time (keepalived, VRRP; ``balancer.multihost.keepalived``)."""

    address: str = Field(description="The floating IPv4 address (public.host and worker_queue.host name it too).")
    prefix: int = Field(24, ge=1, le=32, description="Its network prefix length.")
    interface: str = Field("eth0", description="The balancers' network interface it is added to.")
    router_id: int = Field(51, ge=1, le=255, description="VRRP router id: unique among the VRRP groups of the network.")
    advert_interval: float = Field(
        0.5, ge=0.1, le=25.5, description="Seconds between the holder's VRRP adverts; a dead holder's address moves "
        "after about 3 of them (VRRPv3 allows fractions; python -m bench.pair: 1.6 s with 0.5, 3.1 s with 1)."
    )
    check_interval: int = Field(
        1, ge=1, le=60, description="Seconds between checks that this host's HAProxy answers (whole seconds)."
    )
    check_fall: int = Field(2, ge=1, description="Failed HAProxy checks before a balancer gives the address up.")
    check_rise: int = Field(2, ge=1, description="Passed HAProxy checks before it may hold the address again.")

    @model_validator(mode="after")
    def _check_address(self) -> FloatingAddressSpec:
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(f"floating.address: {self.address!r} is not an IPv4 address") from None
        return self


class PartSpec(_Model):
    """One process of a node: its web front or its worker."""

    host: str = Field(LOOPBACK, description="Address the process listens on (and HAProxy connects to).")
    port: int = Field(ge=1, le=65535)
    args: list[str] = Field(default_factory=list, description="Extra command-line flags (managed nodes).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables (managed nodes).")
    command: list[str] | None = Field(
        None, description="Run this instead of the standard webui command (managed nodes; rarely needed; not on a "
        "node host with tls, whose parts need the TLS flags the sidecar gives them)."
    )
    dispatch_agent_port: int | None = Field(
        None, ge=1, le=65535,
        description="A worker's dispatch agent (HAProxy agent-check; webui/worker/dispatch_agent.py): HAProxy "
        "sends the next job while a result is PNG-encoded. Unset: one job at a time, encoding included "
        "(a remote worker needs the same --dispatch-agent-port). On a node host the worker's agent listens on "
        "loopback and the host agent, which holds the server's one agent check, passes HAProxy its answer.",
    )
    gpu: int | None = Field(
        None, ge=0, description="The GPU of a managed worker (NVML / nvidia-smi index): the sidecar gives it "
        "CUDA_VISIBLE_DEVICES=GPU and CUDA_DEVICE_ORDER=PCI_BUS_ID unless env sets them. Unset: every GPU "
        "it can see (workers only)."
    )
    standby: bool = Field(
        False, description="Keep a warm standby of this managed worker (workers only): a second process with "
        "the model in host memory (its RSS: the weights' size plus about 0.5 GB of imports), promoted in "
        "seconds when the worker dies (balancer/supervision/standby.py)."
    )

    @property
    def address(self) -> str:
        """``host:port`` as HAProxy's server line wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the process."""
        return f"http://{self.host}:{self.port}"


class NodeSpec(_Model):
    """A node: a web front and/or a worker, supervised by a sidecar (managed: here, or on its node host's)
    or by something else on another host (not managed)."""

    name: str = Field(pattern=NAME_PATTERN, description="Server name in HAProxy and cookie value.")
    managed: bool = Field(
        True, description="Start and supervise its processes: here, or on its node_host (launch.py --role node)."
    )
    node_host: str | None = Field(
        None, description="The node host (in node_hosts) that runs it; unset: the balancer's own host. Its parts "
        "listen on that host's address unless their host is set."
    )
    web: PartSpec | None = Field(None, description="The Gradio web front.")
    worker: PartSpec | None = Field(None, description="The GPU worker.")
    cert_name: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="With tls: the name in this node host's certificate (python -m balancer.multihost.certs --node "
        "NAME); HAProxy refuses a certificate that names another host. Default: its node_host, else the node's name.",
    )

    def tls_name(self) -> str:
        """The name HAProxy (and a node host's sidecar) expects in this node's certificate."""
        return self.cert_name or self.node_host or self.name

    @property
    def remote(self) -> bool:
        """Whether it runs on another host than the balancer: not managed here, or on a node host."""
        return not self.managed or self.node_host is not None

    @model_validator(mode="after")
    def _check_parts(self) -> NodeSpec:
        if self.web is None and self.worker is None:
            raise ValueError(f"node {self.name}: needs a web front, a worker, or both")
        if self.web is not None and self.web.gpu is not None:
            raise ValueError(f"node {self.name}: gpu is a worker setting; a web front needs no GPU")
        if self.web is not None and self.web.dispatch_agent_port is not None:
            raise ValueError(f"node {self.name}: dispatch_agent_port is a worker setting")
        if self.web is not None and self.web.standby:
            raise ValueError(f"node {self.name}: standby is a worker setting; a web front has none")
        return self
