"""A node host's *host agent*: HAProxy's agent protocol, served by its sidecar; each part's state to every balancer.

(Not the worker's *dispatch agent*, ``webui/worker/dispatch_agent.py``, which tells HAProxy a
worker's ``maxconn``: HAProxy allows one agent check per server, and a node host's servers use
theirs for this one, which passes a worker's dispatch agent's answer on; see the end.)

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

The agent remembers what it last told each balancer about each server (``settled``): a node host's
rolling restart moves on only once every balancer that asks took the new state (a balancer that
stopped asking for ``STALE_INTERVALS`` intervals counts as gone). What a poll is told may lag the
state: ``state_now`` can hold a park back until the web front is quiet at that very poll
(``HAProxyGate.state_now``); ``settled`` then waits.

A worker with a dispatch agent (``dispatch_agent_port``; it listens on this host's loopback) has its
answer passed on: each question about that worker asks its dispatch agent once and adds its words
(``maxconn:N up|down``, its readiness replacing the host's ``up``), so HAProxy polls it through the
host agent as it polls a local one (every ``health.dispatch_agent_interval``). A dispatch agent that
does not answer within ``DISPATCH_TIMEOUT`` gives ``maxconn:1 up`` (one job at a time, the safe
limit; the health check decides the rest); one whose port refuses the connection gives ``maxconn:1
down``: its worker is gone, out of rotation within one poll instead of after the sidecar's next
probe. Not asked for ``maint`` (nothing is sent to the server anyway).

With two balancers, both ask: each relayed question starts with the balancer's address, so the
dispatch agent keeps each balancer's second slot apart (``DispatchAgent.settle`` waits for the one
that holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from balancer.config.basics import LOOPBACK
from balancer.haproxy.gate import ServerKey
from balancer.haproxy.runtime_protocol import ServerState

logger = logging.getLogger(__name__)

REPLIES: dict[ServerState, str] = {"ready": "ready up", "drain": "drain up", "maint": "maint"}
"""What HAProxy's agent check is told for each server state."""
UNKNOWN_REPLY = "down#not a part of this node host"
READ_TIMEOUT = 1.0
"""Seconds HAProxy has to send its ``agent-send`` line."""
MAX_LINE = 256
STALE_INTERVALS = 3
"""A balancer that asked nothing about a server for this many agent intervals is gone (for ``settled``)."""
SETTLE_POLL = 0.05
"""Seconds between two looks while waiting for every balancer to take a state."""
DISPATCH_TIMEOUT = 0.2
"""Seconds a worker's dispatch agent has to answer before the host agent answers ``SAFE_DISPATCH`` for it."""
DISPATCH_ANSWER = re.compile(r"maxconn:\d{1,4} (up|down)")
"""What a dispatch agent says (``webui/worker/dispatch_agent.py``); anything else is not passed on."""
SAFE_DISPATCH = "maxconn:1 up"
"""Said for a worker whose dispatch agent did not answer in time (its health check decides the rest)."""
GONE_DISPATCH = "maxconn:1 down#the worker's dispatch agent refused the connection"
"""Said for a worker whose dispatch agent's port refused the connection (the worker is gone)."""


def _no_dispatch_agent(key: ServerKey) -> None:
    """``HostAgent``'s default: no server has a dispatch agent."""
    return None


class HostAgentUnavailable(RuntimeError):
    """The host agent cannot listen on its address (the message says which, and why)."""


class HostAgent:
    """A TCP server answering HAProxy's agent checks from ``state_of`` (asyncio, on the sidecar's loop)."""

    def __init__(self, host: str, port: int, state_of: Callable[[ServerKey], ServerState | None],
                 interval: float, dispatch_port_of: Callable[[ServerKey], int | None] = _no_dispatch_agent,
                 state_now: Callable[[ServerKey], Awaitable[ServerState]] | None = None) -> None:
        self.host, self.port = host, port
        self.state_of = state_of
        """The state to report for a server; None when this host does not run it."""
        self.state_now = state_now
        """What to tell a balancer polling now about one of this host's servers, when it may differ from
        ``state_of`` (a park held back); None: ``state_of``."""
        self.dispatch_port_of = dispatch_port_of
        """The loopback port of a server's dispatch agent, whose answer is passed on; None when it has none."""
        self.interval = interval
        """Seconds between two questions of one balancer about one server (``health.host_agent_interval``)."""
        self.told: dict[ServerKey, dict[str, tuple[float, str]]] = {}
        """Server -> balancer address -> (when, the answer) of the last question it asked."""
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

    def reply(self, request: str, peer: str | None = None, state: ServerState | None = None) -> str:
        """The state part of the answer to one ``BACKEND/SERVER`` line (remembered as told to ``peer``); ``state``:
        the one to tell instead of ``state_of``'s (``state_now``'s), for a server this host runs."""
        backend, _, server = request.strip().partition("/")
        known = self.state_of((backend, server)) if server else None
        state = None if known is None else state or known
        if state is None:
            logger.warning("host agent: asked about %r, which this node host does not run", request.strip()[:80])
            return UNKNOWN_REPLY
        if peer is not None:
            self.told.setdefault((backend, server), {})[peer] = (time.monotonic(), REPLIES[state])
        return REPLIES[state]

    async def answer(self, request: str, peer: str | None = None) -> str:
        """The whole answer: ``reply``, with the server's dispatch agent's words when it has one in rotation."""
        backend, _, server = request.strip().partition("/")
        now = await self.state_now((backend, server)) if self.state_now is not None and server else None
        state_words = self.reply(request, peer, now)
        if state_words not in (REPLIES["ready"], REPLIES["drain"]):
            return state_words
        port = self.dispatch_port_of((backend, server))
        if port is None:
            return state_words
        dispatch = await self._ask_dispatch_agent(port, peer)
        # The worker's own up or down replaces the host's up (which only lifts an earlier down).
        return f"{state_words.removesuffix(' up')} {dispatch}"

    @staticmethod
    async def _ask_dispatch_agent(port: int, peer: str | None) -> str:
        """A local dispatch agent's answer (``maxconn:N up|down``) to a poll for the balancer at ``peer`` (its first
        line: the agent keeps each balancer's state apart); ``GONE_DISPATCH`` when its port refused the
        connection; ``SAFE_DISPATCH`` when it gave no answer in time, or one that is not a dispatch answer."""
        writer = None
        try:
            async with asyncio.timeout(DISPATCH_TIMEOUT):
                reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=MAX_LINE)
                writer.write(f"balancer {peer or '-'}\n".encode())
                line = (await reader.readline()).decode("ascii", errors="replace").strip()
        except ConnectionRefusedError:
            return GONE_DISPATCH
        except (OSError, TimeoutError, ValueError) as exc:
            logger.debug("host agent: the dispatch agent on port %d did not answer: %s", port, exc)
            return SAFE_DISPATCH
        finally:
            if writer is not None:
                writer.close()
        return line if DISPATCH_ANSWER.fullmatch(line) else SAFE_DISPATCH

    def settled(self, key: ServerKey) -> bool:
        """Whether every balancer asking about ``key`` was last told its current state (and one asks at least)."""
        state = self.state_of(key)
        now = time.monotonic()
        answers = [answer for at, answer in self.told.get(key, {}).values()
                   if now - at <= STALE_INTERVALS * self.interval]
        return state is not None and bool(answers) and all(answer == REPLIES[state] for answer in answers)

    async def wait_settled(self, keys: Iterable[ServerKey]) -> bool:
        """Wait until every balancer took the current state of each of ``keys`` (``settled``); False when one
        did not within ``STALE_INTERVALS`` agent intervals (none asks, or one that asks is told otherwise)."""
        keys = list(keys)
        deadline = time.monotonic() + STALE_INTERVALS * self.interval + 1.0
        while not all(self.settled(key) for key in keys):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(SETTLE_POLL)
        return True

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            peer = writer.get_extra_info("peername")
            answer = await self.answer(request.decode("ascii", errors="replace"), peer[0] if peer else None)
            writer.write((answer + "\n").encode())
            await writer.drain()
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a line longer than MAX_LINE
            logger.debug("host agent: dropped a check: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
