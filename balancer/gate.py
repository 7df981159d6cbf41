"""What HAProxy is told about each server: ``ready``, ``drain`` or ``maint``, from the sidecar's event loop.

The state is computed here once (``effective``): a local HAProxy is told it over its runtime API,
every balancer of a node host reads it from that host's agent (``balancer.host_agent``)."""

from __future__ import annotations

import asyncio
import logging

from balancer.runtime_api import AsyncRuntimeAPI, RuntimeAPIError, ServerState

logger = logging.getLogger("balancer.sidecar")

ServerKey = tuple[str, str]
"""(backend, server)"""


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
    """

    def __init__(self, api: AsyncRuntimeAPI | None, pulled: bool = False) -> None:
        self.api = api
        self.pulled = pulled
        """HAProxy reads the states from this host's agent (``balancer.host_agent``): with no runtime API to
        tell, every state counts as told (HAProxy takes it within its host agent interval)."""
        self.wanted: dict[ServerKey, ServerState] = {}
        """What the supervisors asked for each server."""
        self.held: set[ServerKey] = set()
        """Servers an operator drained."""
        self.parked: set[ServerKey] = set()
        """Servers an operation keeps in ``maint``."""
        self._locks: dict[ServerKey, asyncio.Lock] = {}

    def effective(self, key: ServerKey) -> ServerState:
        """The state HAProxy is (to be) told: the supervisor's, unless an operator's drain holds it back."""
        state = self.wanted.get(key, "ready")
        if key in self.parked:
            return "maint"
        return "drain" if key in self.held and state == "ready" else state

    async def set_state(self, backend: str, server: str, state: ServerState) -> bool:
        """``ready``, ``drain`` or ``maint``; False when HAProxy could not be told."""
        self.wanted[(backend, server)] = state
        return await self._send((backend, server))

    async def hold(self, backend: str, server: str, held: bool) -> bool:
        """An operator's ``drain`` (``held``) or its end; False when HAProxy could not be told."""
        return await self._mark(self.held, (backend, server), held)

    async def park(self, backend: str, server: str, parked: bool) -> bool:
        """Keep a server in ``maint`` (``parked``), or let it have its state again; False when HAProxy
        could not be told."""
        return await self._mark(self.parked, (backend, server), parked)

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
