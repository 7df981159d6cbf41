"""A node host's *host agent*: HAProxy's agent protocol, served by its sidecar; each part's state to every balancer.

(Not the worker's *dispatch agent*, ``webui/worker/dispatch_agent.py``, which tells one HAProxy a
local worker's ``maxconn``: HAProxy allows one agent check per server, and a node host's servers
use theirs for this one.)

HAProxy connects to ``address:host_agent_port`` every ``agent-inter``, sends the line its server's
``agent-send`` names (``BACKEND/SERVER``, e.g. ``workers/node1``), reads one line and closes.
The answer is the state the part's supervisor asked for, as ``HAProxyGate.effective`` computes
it for the local runtime API (one state, two ways to tell it):

- ``ready up``: in rotation (``up`` undoes an earlier ``down``; health checks still decide too);
- ``drain up``: only requests bound to it by persistence (an operator's drain, a stop under way);
- ``maint``: none (starting, restarting, dead, crash loop).

HAProxy 2.8 applies ``ready``/``drain``/``maint`` to the same administrative flags that ``set
server state`` sets on its runtime API (the last one told wins), and keeps asking the agent while
a server is in ``maint``. An agent that does not answer changes nothing: a host that is gone is
noticed by the health checks (``check``), which then end its sessions (``on-marked-down
shutdown-sessions``) so that HAProxy replays their jobs elsewhere. A server this host does not run
gets ``down#...``: visible on the stats page, never in rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from balancer.gate import ServerKey
from balancer.runtime_api import ServerState

logger = logging.getLogger("balancer.host_agent")

REPLIES: dict[ServerState, str] = {"ready": "ready up", "drain": "drain up", "maint": "maint"}
"""What HAProxy's agent check is told for each server state."""
UNKNOWN_REPLY = "down#not a part of this node host"
READ_TIMEOUT = 1.0
"""Seconds HAProxy has to send its ``agent-send`` line."""
MAX_LINE = 256


def agent_send(backend: str, server: str) -> str:
    """The ``agent-send`` line of a server in haproxy.cfg (HAProxy turns ``\\n`` into a newline)."""
    return f'"{backend}/{server}\\n"'


class HostAgentUnavailable(RuntimeError):
    """The host agent cannot listen on its address (the message says which, and why)."""


class HostAgent:
    """A TCP server answering HAProxy's agent checks from ``state_of`` (asyncio, on the sidecar's loop)."""

    def __init__(self, host: str, port: int, state_of: Callable[[ServerKey], ServerState | None]) -> None:
        self.host, self.port = host, port
        self.state_of = state_of
        """The state to report for a server; None when this host does not run it."""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (``HostAgentUnavailable`` when the address cannot be bound)."""
        try:
            self._server = await asyncio.start_server(self._answer, self.host, self.port, limit=MAX_LINE)
        except OSError as exc:
            raise HostAgentUnavailable(f"the host agent cannot listen on {self.host}:{self.port}: "
                                   f"{exc.strerror or exc}") from None
        logger.info("host agent: answering HAProxy's agent checks on %s:%d", self.host, self.port)

    async def aclose(self) -> None:
        """Stop listening (HAProxy keeps the states last told)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def reply(self, request: str) -> str:
        """The answer to one ``BACKEND/SERVER`` line."""
        backend, _, server = request.strip().partition("/")
        state = self.state_of((backend, server)) if server else None
        if state is None:
            logger.warning("host agent: asked about %r, which this node host does not run", request.strip()[:80])
            return UNKNOWN_REPLY
        return REPLIES[state]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            writer.write((self.reply(request.decode("ascii", errors="replace")) + "\n").encode())
            await writer.drain()
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a line longer than MAX_LINE
            logger.debug("host agent: dropped a check: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
