"""The ports ``launch.py --nodes`` and ``add-node`` give nodes: valid and free ones, also near 65535."""

from __future__ import annotations

import socket

import pytest

from balancer.config.loading import DISPATCH_AGENT_PORT_OFFSET, local_nodes, parse_cluster
from balancer.operations.new_node import LOWEST_PORT, PORT_SEARCH, candidate_ports, next_free_port
from balancer.operations.runner import OperationError


def test_a_worker_near_the_top_gets_a_dispatch_agent_port_from_the_bottom() -> None:
    # A worker on 65400: its agent port would be 66400, past the last port; the search goes on from 1024.
    port = next_free_port(65400 + DISPATCH_AGENT_PORT_OFFSET, set())
    assert LOWEST_PORT <= port <= 65535


def test_the_search_wraps_past_65535_and_skips_taken_ports() -> None:
    taken = set(range(65530, 65536))
    port = next_free_port(65530, taken)
    assert port not in taken
    assert LOWEST_PORT <= port < LOWEST_PORT + PORT_SEARCH


def test_a_port_something_listens_on_is_skipped() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert next_free_port(busy, set()) != busy


def test_every_candidate_is_a_port_and_the_search_is_bounded() -> None:
    for first in (0, 80, 7960, 65535, 65536, 66400, 200_000):
        ports = list(candidate_ports(first))
        assert len(ports) == PORT_SEARCH
        assert all(LOWEST_PORT <= port <= 65535 for port in ports)
        assert len(set(ports)) == PORT_SEARCH


def test_when_every_candidate_is_taken_the_error_says_so() -> None:
    with pytest.raises(OperationError, match="no free port among the 200 tried from 7960"):
        next_free_port(7960, set(candidate_ports(7960)))


def test_local_workers_near_the_top_get_dispatch_agent_ports_below_them(tmp_path) -> None:
    nodes = local_nodes(2, first_web_port=64990, first_worker_port=65000)
    agents = [node["worker"]["dispatch_agent_port"] for node in nodes]
    assert agents == [65000 - DISPATCH_AGENT_PORT_OFFSET, 65001 - DISPATCH_AGENT_PORT_OFFSET]
    parse_cluster({"run_dir": str(tmp_path), "nodes": nodes})  # a valid cluster (it refused ports past 65535)
    assert [node["worker"]["dispatch_agent_port"] for node in local_nodes(1)] == [7960 + DISPATCH_AGENT_PORT_OFFSET]
