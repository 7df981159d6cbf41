"""How an operation waits on a node: until a check passes (``wait_for``), and until its requests are quiet, to park
or unpark its web front at that moment (``QuietSwitch``: the rolling restart, a node's removal)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from balancer.haproxy.gate import ParkGuard
from balancer.operations.node_control import NodeControl, Traffic
from balancer.operations.runner import OperationReport

POLL_INTERVAL = 0.1
"""Seconds between two looks at HAProxy's or the supervisors' view while an operation waits."""


class NodeFailed(Exception):
    """One node of an operation could not be handled; the operation stops there."""


async def wait_for(check: Callable[[], bool | Awaitable[bool]], timeout: float, failure: str) -> None:
    """Poll ``check`` (plain or async) until true; ``NodeFailed(failure)`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise NodeFailed(failure)


class QuietSwitch:
    """Parks or unparks a node's web front servers at a moment its requests are quiet."""

    def __init__(self, control: NodeControl, drain_timeout: float, settle: float) -> None:
        """``drain_timeout``: how long to wait for a quiet moment; ``settle``: seconds quiet that make one."""
        self.control = control
        self.drain_timeout = drain_timeout
        self.settle = settle
        self.busy = "busy"
        """Why the last wait for a quiet moment went on (said when it times out)."""

    async def park(self, webs: list[tuple[str, str]], parked: bool, guard: ParkGuard | None = None) -> bool:
        """Park (or unpark) these web front servers (``guard``: ``NodeControl.park``); whether all were taken."""
        took = [await self.control.park(*web, parked, guard) for web in webs]
        return all(took)

    async def switch_when_quiet(self, node: str, traffic: Callable[[], Awaitable[Traffic]],
                                webs: list[tuple[str, str]], parked: bool, report: OperationReport) -> float | None:
        """Park (``parked``) or unpark ``webs`` at a moment ``traffic`` is quiet: seconds waited, None after
        ``drain_timeout`` (nothing switched then).

        Quiet: nothing in flight and no new request for ``settle`` s. A request that arrives
        between the last look and the switch may be a Gradio job's first request, whose next ones
        would then go elsewhere: so ``traffic`` is looked at once more after the switch, and if a
        request came (or a balancer did not take the switch), the switch is undone at once and the wait
        begins again: a web front restarted while a balancer still routes to it would fail jobs. On a node host a
        switch reaches each balancer at its next poll, up to an agent interval later (and there ``maint`` ends the
        web front's sessions): so it is told only at a poll where ``traffic`` is still what it was when found
        quiet, and then it stands (undoing it would split a job begun since)."""
        start = time.monotonic()
        while (left := self.drain_timeout - (time.monotonic() - start)) > 0:
            quiet = await self.wait_quiet(traffic, left)
            if quiet is None:
                return None
            took = await self.park(webs, parked, self.still_quiet(traffic, quiet))
            if took and self.control.switches_guarded:
                return time.monotonic() - start  # each balancer took it at a poll where it was still quiet
            try:
                slipped = (await traffic()).total != quiet.total
            except OSError:
                slipped = True
            if took and not slipped:
                return time.monotonic() - start
            await self.park(webs, not parked)
            why = "a request came just as its web front switched" if slipped else "not every balancer took the switch"
            report.log(node, f"{why}: switched back, waiting again")
        return None

    @staticmethod
    def still_quiet(traffic: Callable[[], Awaitable[Traffic]], quiet: Traffic) -> ParkGuard:
        """Whether nothing is in flight and no request came since ``quiet`` (asked again at each call)."""

        async def unchanged() -> bool:
            try:
                seen = await traffic()
            except OSError:
                return False
            return not seen.in_flight and seen.total == quiet.total

        return unchanged

    async def wait_quiet(self, traffic: Callable[[], Awaitable[Traffic]], timeout: float) -> Traffic | None:
        """The traffic once nothing was in flight and no request came for ``settle`` s (looking every
        ``POLL_INTERVAL``); None after ``timeout``."""
        start = time.monotonic()
        quiet: tuple[float, Traffic] | None = None
        while time.monotonic() - start < timeout:
            try:
                seen: Traffic | None = await traffic()
            except OSError as exc:
                seen = None  # HAProxy does not answer: nothing is known, so nothing is quiet
                self.busy = f"its request counts did not answer ({exc})"
            now = time.monotonic()
            if seen is not None and seen.in_flight:
                self.busy = f"{seen.in_flight} in flight at the last look" + (
                    f": {', '.join(seen.routes)}" if seen.routes else "")
            elif seen is not None and quiet is not None and seen.total != quiet[1].total:
                self.busy = "new requests kept coming"
            if seen is None or seen.in_flight or (quiet is not None and seen.total != quiet[1].total):
                quiet = None
            elif quiet is None:
                quiet = (now, seen)
            if quiet is not None and now - quiet[0] >= self.settle:
                return quiet[1]
            await asyncio.sleep(POLL_INTERVAL)
        return None
