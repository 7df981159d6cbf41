"""HAProxy's agent check, haproxy.cfg's side: the line a server's ``agent-send`` sends to its agent.

A node host's host agent (``balancer.multihost.host_agent``) reads that line to know which server is asked
about; haproxy.cfg (``balancer.haproxy.config``) writes it.
"""

from __future__ import annotations


def agent_send(backend: str, server: str) -> str:
    """The ``agent-send`` line of a server in haproxy.cfg (HAProxy turns ``\\n`` into a newline)."""
    return f'"{backend}/{server}\\n"'
