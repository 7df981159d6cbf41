"""``ProcessWatcher``: watches one started process for its supervisor until it dies, hangs, gets stuck or is to stop.

It probes the process every ``probe_interval``: the first answer makes it ``ready`` (HAProxy told), a failing
probe ``unready``. A process found frozen while its probe is unanswered (``balancer.supervision.hang``), or a
worker reporting its denoising loop stalled, is killed (cause ``hung``); one that fails its probe for longer
than ``stuck_after`` (``start_timeout`` while it starts) is killed too (cause ``stuck``). A process that exits
is taken out of rotation first, then its death classified (``balancer.supervision.causes``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from balancer.config.health import SidecarSpec
from balancer.supervision.causes import Death, DeathCause, DeathClassifier
from balancer.supervision.child import Child
from balancer.supervision.hang import HangDetector, ProbeAnswer
from balancer.supervision.state import PartState, PartStatus

logger = logging.getLogger(__name__)


@dataclass
class ProcessWatcher:
    """Probes one supervised process and decides when it is dead, hung or stuck (the supervisor restarts it)."""

    name: str
    status: PartStatus
    child: Child
    settings: SidecarSpec
    classifier: DeathClassifier
    hang: HangDetector
    set_state: Callable[[PartState], None]
    """Records a new state (the status and the metrics)."""
    clock: Callable[[], float]
    """The supervisor's clock (the event loop's timers')."""

    async def watch(self, stopping: asyncio.Event, restarting: asyncio.Event, oom_baseline: int | None
                    ) -> Death | None:
        """Probe until the process dies (its ``Death``), hangs or gets stuck (killed: ``Death``) or we stop (None)."""
        exited = asyncio.ensure_future(self.child.wait())
        stop = asyncio.ensure_future(stopping.wait())
        restart = asyncio.ensure_future(restarting.wait())
        last_ok = self.clock()
        try:
            while True:
                probe = asyncio.ensure_future(self.child.probe())
                frozen = await self._wait_for_probe(probe, exited, stop, restart)
                if exited.done():
                    probe.cancel()
                    await self.child.tell_haproxy("maint")  # first of all: no more requests to it
                    if stop.done():
                        return None
                    return await self.classifier.classify(exited.result(), self.status.pid or 0, oom_baseline)
                if stop.done() or restart.done():
                    probe.cancel()
                    return None
                if frozen:
                    return await self._kill(DeathCause.HUNG, frozen)
                now = self.clock()
                answer: ProbeAnswer = probe.result()
                if answer.ok:
                    last_ok = now
                    await self._on_probe_ok()
                elif answer.stalled and self.status.state is not PartState.STARTING:
                    return await self._kill(DeathCause.HUNG, f"the worker reports {answer.stalled}")
                elif self._probe_failed_too_long(now, last_ok):
                    return await self._kill(DeathCause.STUCK, f"no answer from {self.child.probe_target} "
                                                              f"for {now - last_ok:.0f} s")
                await asyncio.wait({exited, stop, restart}, timeout=self.settings.probe_interval,
                                   return_when=asyncio.FIRST_COMPLETED)  # an exit, a stop: at once
        finally:
            stop.cancel()
            exited.cancel()
            restart.cancel()

    async def _wait_for_probe(self, probe: asyncio.Future, exited: asyncio.Future, stop: asyncio.Future,
                              restart: asyncio.Future) -> str | None:
        """Wait for the probe's answer (or the exit, the stop, a planned restart); the evidence if the process
        is found frozen meanwhile (not while it starts)."""
        self.hang.probe_sent(self.status.pid, self.clock())
        look_every = None if self.status.state is PartState.STARTING else self.settings.hang_check_interval
        while True:  # ends with the probe, at its timeout at the latest
            done, _ = await asyncio.wait({exited, stop, restart, probe}, timeout=look_every,
                                         return_when=asyncio.FIRST_COMPLETED)
            if done:
                break
            if evidence := self.hang.check(self.clock()):
                probe.cancel()
                return evidence
        if probe.done() and not probe.cancelled():
            self.hang.probe_done(probe.result())
        return None

    async def _on_probe_ok(self) -> None:
        if self.status.state is PartState.READY:
            return
        if self.status.state is PartState.STARTING:
            startup = self.clock() - (self.status.started_at or 0)
            logger.info("%s: ready after %.1f s", self.name, startup)
        else:
            logger.info("%s: answering its probe again", self.name)
        self.status.ready_at = self.clock()
        self.set_state(PartState.READY)
        await self.child.tell_haproxy("ready")

    def _probe_failed_too_long(self, now: float, last_ok: float) -> bool:
        if self.status.state is PartState.STARTING:
            return now - (self.status.started_at or now) > self.settings.start_timeout
        if self.status.state is PartState.READY:
            self.set_state(PartState.UNREADY)
            logger.warning("%s: probe %s failing", self.name, self.child.probe_target)
        return now - last_ok > self.settings.stuck_after

    async def _kill(self, cause: DeathCause, detail: str) -> Death:
        """Out of rotation, then SIGKILL at once (a hung or stuck process finishes nothing); its ``Death``."""
        await self.child.tell_haproxy("maint")
        logger.error("%s: %s: %s: killing pid %s", self.name, cause.value, detail, self.status.pid)
        returncode = await self.child.kill()
        return Death(cause, returncode, f"{detail}; killed and restarted")
