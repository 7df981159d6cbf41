"""HAProxy's agent check on a worker: a second job only while the GPU would otherwise wait for PNG encoding.

HAProxy gives each worker one job at a time (``maxconn 1``) and the next one only after the
previous response is sent, so the GPU would sit idle while a result is PNG-encoded. The
generation thread hands its images to the encoder thread and is free at once; this agent then
tells HAProxy ``maxconn:2``, so the job at the head of HAProxy's queue comes now and starts at
once, and ``maxconn:1`` otherwise (generating, or a job already waiting). HAProxy polls it
(``agent-check``, every ``agent-inter``) and applies each answer at once, dequeuing a waiting job
when the limit rises.

Each answer also says ``up`` or ``down``: ``down`` while the worker is not ready (loading, stalled,
exiting after an out-of-memory, shutting down). HAProxy takes a server out at the agent's first
``down`` (the agent's fall is 1), within one poll, where its health check needs ``fall`` failed
checks; meanwhile jobs sent to it would be answered 503 and retried onto the same idle server (the
least loaded) until the retries ran out. ``up`` only lifts what the agent said: the server is UP
again once its health check agrees, and neither word touches an operator's drain or maintenance.

A polled answer can be stale: the encoder must not send its response (which frees a slot)
while HAProxy may still hold ``maxconn 2`` for a worker that is generating again, or HAProxy
would send a job that has to wait. ``settle`` waits until HAProxy has surely applied
``maxconn:1`` (a poll after the one that answered it: HAProxy runs one check at a time per
server), or until the window is open again (then the job it may send starts at once).

Several HAProxies may poll one worker (two balancers; on a node host, through its host agent),
so that proof is kept for each of them: a poller is the address it connects from and what it sends
first (HAProxy's ``agent-send``, the server's ``BACKEND/SERVER``; the host agent sends the address
of the balancer it asks for). A poller silent for ``POLLER_GONE`` seconds holds no
slot any more (a balancer that stopped, or a check that was turned off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT = 1.0
"""Longest a response waits for HAProxy to take back the second slot (it polls every few ms)."""
READ_TIMEOUT = 0.5
"""Seconds a poller has to send what names it (HAProxy sends its ``agent-send`` at once)."""
MAX_LINE = 256
POLLER_GONE = 1.0
"""A poller that has not asked for this many seconds holds no second slot (and is forgotten)."""


@dataclass
class _Poller:
    """What one HAProxy was last told, as far as the second slot goes."""

    last_poll: float
    granted: bool = False
    """It may hold maxconn 2: a poll of its own answered it, and no later one proved 1 applied."""
    one_answered: bool = False
    """A poll of its own answered maxconn 1 since the grant: its next poll proves it applied."""


class DispatchAgent:
    """Answers HAProxy's agent checks with this worker's ``maxconn`` (1, or 2 while the window is open) and
    whether it serves at all (``up``/``down``)."""

    def __init__(self, window_open: Callable[[], bool], serving: Callable[[], bool] = lambda: True,
                 settle_timeout: float = SETTLE_TIMEOUT) -> None:
        """``window_open()``: whether a job sent now would start at once while a result is being encoded;
        ``serving()``: whether the worker is ready for jobs at all (its ``/readyz``)."""
        self._window_open = window_open
        self._serving = serving
        self._settle_timeout = settle_timeout
        self._server: asyncio.Server | None = None
        self._polls = 0
        self._pollers: dict[str, _Poller] = {}
        """Each HAProxy polling this agent (its address and what it sent first) -> its slot state."""
        self._poll = asyncio.Event()

    @property
    def polls(self) -> int:
        """Agent checks answered so far."""
        return self._polls

    async def start(self, host: str, port: int) -> None:
        """Listen for HAProxy's agent checks."""
        self._server = await asyncio.start_server(self._answer, host, port, limit=MAX_LINE)
        logger.info("dispatch agent on %s:%d", host, port)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # What arrives first, newline or not: a server added through HAProxy's runtime API sends its
            # agent-send without one (the API drops the escape: "workers/node3n", quotes included).
            sent = await asyncio.wait_for(reader.read(MAX_LINE), READ_TIMEOUT)
        except (OSError, TimeoutError):
            sent = b""
        peer = writer.get_extra_info("peername")
        poller = self._poller(f"{peer[0] if peer else '-'} {sent.decode('ascii', errors='replace').strip()}")
        self._polls += 1
        if poller.one_answered:
            # HAProxy runs one check at a time per server: this poll means it applied maxconn 1.
            poller.granted = poller.one_answered = False
        opened = self._window_open()
        if opened:
            poller.granted = True
        elif poller.granted:
            poller.one_answered = True
        try:
            state = "up" if self._serving() else "down"
            writer.write(f"maxconn:{2 if opened else 1} {state}\n".encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._poll.set()
            self._poll = asyncio.Event()

    def _poller(self, key: str) -> _Poller:
        """The poller ``key`` (new ones start with no slot), its poll time set to now; the gone ones forgotten."""
        now = time.monotonic()
        self._pollers = {name: known for name, known in self._pollers.items() if now - known.last_poll <= POLLER_GONE}
        poller = self._pollers.setdefault(key, _Poller(now))
        poller.last_poll = now
        return poller

    def _held(self) -> bool:
        """Whether some HAProxy that still polls may hold maxconn 2."""
        now = time.monotonic()
        return any(poller.granted and now - poller.last_poll <= POLLER_GONE for poller in self._pollers.values())

    async def settle(self) -> None:
        """Return when freeing a slot cannot bring a job that would wait (see the module docstring)."""
        deadline = time.monotonic() + self._settle_timeout
        while self._held() and not self._window_open():
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("HAProxy did not poll the dispatch agent within %.1f s; answering anyway",
                               self._settle_timeout)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll.wait(), min(left, POLLER_GONE))
