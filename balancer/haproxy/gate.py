"""What HAProxy is told about each server: ``ready``, ``drain`` or ``maint``, from the sidecar's event loop.

The state is computed here once (``effective``): a local HAProxy is told it over its runtime API,
every balancer of a node host reads it from that host's agent (``balancer.multihost.host_agent``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.haproxy.runtime_protocol import RuntimeAPIError, ServerState

logger = logging.getLogger(__name__)

ServerKey = tuple[str, str]
"""(backend, server)"""
ParkGuard = Callable[[], Awaitable[bool]]
"""Whether a park may reach a balancer now (its server is still quiet); see ``HAProxyGate.park``."""


class HAProxyGate:
    """Tells HAProxy whether a server may take traffic; logs (never raises) when it cannot.

    It remembers the last state asked for each server, so that a restarted HAProxy (whose
    servers all start out ``ready``) can be told again with ``reapply``. Commands for one
    server go one at a time and always send the latest state asked, so a ``reapply`` never
    overtakes a newer state.

    An operator's ``drain`` (``hold``) wins over the supervisor's ``ready`` until ``release``:
    a held server that its supervisor wants ``ready`` is told ``drain``; ``maint`` (no process
    to send to) still goes through. A ``park``-ed server is told ``maint`` whatever else is asked,
    until unparked (a rolling restart chooses the moment a web front takes its sticky clients back).

    On a node host (``pulled``) a park or an unpark can come with a guard, asked at each balancer's poll until
    the switch is ``confirm``-ed: while it says no, that balancer is told the state the server had before.
    A balancer takes the host agent's word at its next poll, up to an agent interval after the park,
    and there ``maint`` ends the server's sessions (``on-marked-down shutdown-sessions``, which a node
    host's servers have for lost hosts): the guard makes ``maint`` reach each balancer only at an
    instant when nothing was sent to the web front since the rolling restart found it quiet. So must the end of
    ``maint``: a job whose first request reached the web front standing in for a restarted one must not send
    its next ones to the restarted one.
    """

    def __init__(self, api: AsyncRuntimeAPI | None, pulled: bool = False) -> None:
        self.api = api
        self.pulled = pulled
        """HAProxy reads the states from this host's agent (``balancer.multihost.host_agent``): with no runtime API to
        tell, every state counts as told (HAProxy takes it within its host agent interval)."""
        self.wanted: dict[ServerKey, ServerState] = {}
        """What the supervisors asked for each server."""
        self.held: set[ServerKey] = set()
        """Servers an operator drained."""
        self.parked: set[ServerKey] = set()
        """Servers an operation keeps in ``maint``."""
        self.park_guards: dict[ServerKey, ParkGuard] = {}
        """Servers whose park or unpark a balancer is told only while their guard agrees (not yet confirmed)."""
        self._locks: dict[ServerKey, asyncio.Lock] = {}

    def effective(self, key: ServerKey) -> ServerState:
        """The state HAProxy is (to be) told: the supervisor's, unless an operator's drain holds it back."""
        return "maint" if key in self.parked else self._unparked(key)

    def _unparked(self, key: ServerKey) -> ServerState:
        state = self.wanted.get(key, "ready")
        return "drain" if key in self.held and state == "ready" else state

    async def state_now(self, key: ServerKey) -> ServerState:
        """What a balancer polling now is told: ``effective``, except for a park or an unpark its guard holds back
        (then the state the server had before it)."""
        guard = self.park_guards.get(key)
        if guard is not None and not await guard():
            return self._unparked(key) if key in self.parked else "maint"
        return self.effective(key)

    async def set_state(self, backend: str, server: str, state: ServerState) -> bool:
        """``ready``, ``drain`` or ``maint``; False when HAProxy could not be told."""
        self.wanted[(backend, server)] = state
        return await self._send((backend, server))

    async def hold(self, backend: str, server: str, held: bool) -> bool:
        """An operator's ``drain`` (``held``) or its end; False when HAProxy could not be told."""
        return await self._mark(self.held, (backend, server), held)

    async def park(self, backend: str, server: str, parked: bool, guard: ParkGuard | None = None) -> bool:
        """Keep a server in ``maint`` (``parked``), or let it have its state again; False when HAProxy
        could not be told. ``guard``: on a node host, asked before each balancer is told the switch, until
        ``confirm_park`` (a local HAProxy is told at once, and ``maint`` ends no session there)."""
        key = (backend, server)
        self.park_guards.pop(key, None)
        if guard is not None and self.pulled:
            self.park_guards[key] = guard
        return await self._mark(self.parked, key, parked)

    def confirm_park(self, key: ServerKey) -> None:
        """Every balancer took the park (or unpark): from now on it holds whatever its guard would say (the web
        front may restart)."""
        self.park_guards.pop(key, None)

    async def _mark(self, marks: set[ServerKey], key: ServerKey, marked: bool) -> bool:
        if marked:
            marks.add(key)
        else:
            marks.discard(key)
        return await self._send(key)

    def forget(self, key: ServerKey) -> None:
        """Drop everything known about a deleted server (a removed node's)."""
        self.wanted.pop(key, None)
        self.held.discard(key)
        self.parked.discard(key)
        self.park_guards.pop(key, None)
        self._locks.pop(key, None)

    async def reapply(self) -> None:
        """Tell HAProxy every state asked so far again (after it restarted)."""
        keys = [*self.wanted, *((self.held | self.parked) - self.wanted.keys())]
        if keys:
            logger.info("HAProxy: re-applying the states of %d servers", len(keys))
        for key in keys:
            await self._send(key)

    async def _send(self, key: ServerKey) -> bool:
        if self.api is None:
            return self.pulled
        async with self._locks.setdefault(key, asyncio.Lock()):
            state = self.effective(key)
            try:
                await self.api.set_server_state(*key, state)
            except (OSError, RuntimeAPIError) as exc:  # OSError includes TimeoutError
                logger.warning("could not set %s/%s to %s in HAProxy: %s", *key, state, str(exc) or type(exc).__name__)
                return False
        reason = " (parked)" if key in self.parked else " (operator drain)" if key in self.held else ""
        logger.info("HAProxy: %s/%s -> %s%s", *key, state, reason)
        return True
