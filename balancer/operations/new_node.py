"""A node added at runtime (``POST /add-node``): the next free ``nodeN`` name and free ports, the first managed
local node's flags (``new_node_spec``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from itertools import chain, islice

from balancer.config.basics import LOOPBACK
from balancer.config.cluster import ClusterSpec
from balancer.config.loading import DISPATCH_AGENT_PORT_OFFSET
from balancer.config.nodes import NodeSpec
from balancer.operations.runner import OperationError

PORT_SEARCH = 200
"""Ports ``next_free_port`` tries before it gives up."""
LOWEST_PORT = 1024
"""Where the search goes on after 65535: ports below this need privileges."""


def candidate_ports(first: int) -> Iterator[int]:
    """``PORT_SEARCH`` ports from ``first`` on, going on from ``LOWEST_PORT`` past 65535 (a node on port 65400
    still gets a dispatch agent port 1,000 above it)."""
    start = LOWEST_PORT + (first - LOWEST_PORT) % (65536 - LOWEST_PORT) if first > 65535 else max(first, LOWEST_PORT)
    return islice(chain(range(start, 65536), range(LOWEST_PORT, start)), PORT_SEARCH)


def next_free_port(first: int, taken: set[int]) -> int:
    """The first of ``candidate_ports(first)`` that is not ``taken`` and that nothing on this host listens on
    (a bind on loopback: instant, no network I/O); ``OperationError`` when none is."""
    for port in candidate_ports(first):
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise OperationError(f"no free port among the {PORT_SEARCH} tried from {first}")


def new_node_spec(spec: ClusterSpec, names_taken: set[str], gpu: int | None) -> NodeSpec:
    """A new local node like the first managed one (its flags, env): the next ``nodeN`` name in neither ``spec`` nor
    ``names_taken``, ports one above the highest in use (a dispatch agent ``DISPATCH_AGENT_PORT_OFFSET`` above its
    worker when the template has one), on GPU ``gpu``. ``OperationError`` when there is no node to copy."""
    local = [node for node in spec.nodes_on(None) if node.web is not None and node.worker is not None]
    if not local:
        raise OperationError("no managed local node with a web front and a worker to copy")
    template = local[0]
    assert template.web is not None and template.worker is not None
    if template.web.command or template.worker.command:
        raise OperationError(f"{template.name} runs its own command: a new node cannot copy it")
    names = {node.name for node in spec.nodes} | names_taken
    name = next(f"node{i}" for i in range(len(names) + 1, len(names) + 1000) if f"node{i}" not in names)
    parts = [part for node in spec.nodes for part in (node.web, node.worker) if part is not None]
    listeners = (spec.public, spec.worker_queue, spec.stats, spec.sidecar)
    taken = {port for part in parts for port in (part.port, part.dispatch_agent_port) if port}
    taken |= {listener.port for listener in listeners}
    web_port = next_free_port(max(part.port for node in spec.nodes if (part := node.web)) + 1, taken)
    taken.add(web_port)
    worker_port = next_free_port(max(part.port for node in spec.nodes if (part := node.worker)) + 1, taken)
    taken.add(worker_port)
    agent_port = (next_free_port(worker_port + DISPATCH_AGENT_PORT_OFFSET, taken)
                  if template.worker.dispatch_agent_port else None)
    worker = template.worker.model_copy(update={"port": worker_port, "dispatch_agent_port": agent_port,
                                                "gpu": gpu, "args": list(template.worker.args),
                                                "env": dict(template.worker.env)})
    web = template.web.model_copy(update={"port": web_port, "args": list(template.web.args),
                                          "env": dict(template.web.env)})
    return NodeSpec(name=name, web=web, worker=worker)
