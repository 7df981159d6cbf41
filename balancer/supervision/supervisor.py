"""``ProcessSupervisor``: keeps one process running: start, probe, restart with backoff, give up on a crash loop.

What the process is (a node part, HAProxy) and how to start, probe and stop it is a ``Child``
(``balancer.supervision.child``); the supervisor decides when, with ``balancer.supervision.restart_policy``, and
watches each run with a ``ProcessWatcher`` (``balancer.supervision.watcher``: steps 2, 5 and 6):

1. before the first start the child tells HAProxy ``maint``; the process is started and probed;
2. once it answers its probe, ``ready``;
3. when it dies: ``maint`` first, then the cause (``balancer.supervision.causes``) is logged and counted,
   and the process restarted: at once the first time, then with exponential backoff;
4. a crash loop (too many deaths in a window) stops the restarts: ``maint``, an ERROR log,
   ``crash_looped`` in ``/status``, until ``retry`` (``POST /retry/NODE/PART``);
5. a started process that is hung is killed and restarted at once (cause ``hung``, with the
   evidence, ``balancer.supervision.hang``): its probe unanswered for ``hang_after`` while it used no CPU
   and had no runnable thread (frozen), or a worker reporting its denoising loop stalled;
6. a process that is alive but fails its probe for longer than ``stuck_after`` (or never
   answers within ``start_timeout``) is killed and restarted (cause ``stuck``);
7. on stop: ``drain``, the child's graceful stop, ``maint``;
8. a planned restart (``request_restart``, a rolling restart): ``maint``, the child's graceful
   stop, and a new start at once; not a death (no backoff, no crash-loop count).

A child that cannot even be started raises ``StartFailed``: on the first start that is the
caller's to handle (nothing runs yet); later it counts as one more death.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from balancer.config.health import SidecarSpec
from balancer.supervision.causes import Death, DeathCause, DeathClassifier
from balancer.supervision.child import Child, StartFailed
from balancer.supervision.hang import Activity, HangDetector, look_at
from balancer.supervision.restart_policy import RestartPolicy, restart_loop
from balancer.supervision.state import PartObserver, PartState, PartStatus
from balancer.supervision.watcher import ProcessWatcher

logger = logging.getLogger(__name__)


class ProcessSupervisor:
    """Keeps one child process running, restarts it when it dies, and keeps HAProxy told."""

    def __init__(
        self,
        status: PartStatus,
        child: Child,
        settings: SidecarSpec,
        classifier: DeathClassifier,
        metrics: PartObserver,
        retry_hint: str = "",
        clock: Callable[[], float] = time.monotonic,
        look: Callable[[int, float], Activity | None] = look_at,
    ) -> None:
        """``clock`` reads the time the event loop's timers run on (asyncio's: ``time.monotonic``); ``look``
        samples a process's activity for the hang detector. Tests replace both (a loop on virtual time)."""
        self.status = status
        self.child = child
        self.settings = settings
        self.classifier = classifier
        self.metrics = metrics
        self.retry_hint = retry_hint
        self.policy = RestartPolicy(
            settings.backoff_initial, settings.backoff_max, settings.crash_loop_deaths, settings.crash_loop_window,
            clock,
        )
        self.clock = clock
        self.started = asyncio.Event()
        """Set once the process has been started the first time."""
        self.name = f"{status.node}/{status.part}"
        self._oom_baseline: int | None = None
        self._retry = asyncio.Event()
        self._restart = asyncio.Event()
        hang = HangDetector(self.name, child.probe_target, settings.hang_after, settings.hang_cpu_seconds, look)
        self.watcher = ProcessWatcher(self.name, status, child, settings, classifier, hang, self._set_state, clock)
        metrics.register(status)

    def _set_state(self, state: PartState) -> None:
        self.status.state = state
        self.metrics.set_state(self.status)

    async def run(self, stopping: asyncio.Event) -> None:
        """Start, watch and restart the process until ``stopping`` is set; then stop it."""
        try:
            await self._supervise(stopping)
        finally:
            try:
                await self._stop()
            finally:
                await self.child.aclose()

    async def _supervise(self, stopping: asyncio.Event) -> None:
        async def crash_looped() -> bool:
            await self._give_up()
            return await self._wait_for_retry(stopping)

        await restart_loop(self.policy, lambda: self._attempt(stopping), self._record, crash_looped,
                           lambda delay: self._back_off(delay, stopping))

    async def _attempt(self, stopping: asyncio.Event) -> Death | None:
        """Start the process and watch it, through planned restarts: why it died, or None once stopping."""
        while not stopping.is_set():
            death = await self._start()
            if death is None:
                death = await self.watcher.watch(stopping, self._restart, self._oom_baseline)
            if death is None and self._restart.is_set() and not stopping.is_set():
                await self._planned_restart()
                continue
            return death
        return None

    async def _back_off(self, delay: float, stopping: asyncio.Event) -> bool:
        """Wait ``delay`` before a restart (in ``backoff``); False when the sidecar stops meanwhile."""
        if delay:
            self._set_state(PartState.BACKOFF)
            logger.info("%s: restarting in %.1f s", self.name, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
        if stopping.is_set():
            return False
        self.status.restarts += 1
        self.metrics.record_restart(self.status)
        return True

    async def _start(self) -> Death | None:
        """Start the process; the ``Death`` of a restart that failed (a failed first start raises)."""
        if self.status.state is PartState.STOPPED:
            await self.child.tell_haproxy("maint")  # out of rotation until it answers (after a death it already is)
        self._oom_baseline = self.classifier.baseline()
        self.status.ready_at = None
        self._set_state(PartState.STARTING)  # already while a slow start (HAProxy's) is under way
        try:
            pid = await self.child.start()
        except StartFailed as exc:
            if not self.started.is_set():
                raise
            return Death(DeathCause.CRASH, None, f"did not start: {exc}")
        self.status.pid = pid
        self.status.started_at = self.clock()
        self.started.set()
        logger.info("%s: started pid %d (log %s)", self.name, pid, self.child.log_path)
        return None


    def _record(self, death: Death) -> None:
        status = self.status
        status.last_cause, status.last_detail, status.last_returncode = death.cause, death.detail, death.returncode
        status.deaths[death.cause] += 1
        status.pid = None
        self.metrics.record_death(status, death)
        logger.warning("%s: died (%s): %s", self.name, death.cause.value, death.detail)

    async def _give_up(self) -> None:
        self.status.crash_looped = True
        self._set_state(PartState.CRASH_LOOP)
        await self.child.tell_haproxy("maint")
        logger.error(
            "%s: CRASH LOOP: %d deaths within %.0f s (last: %s). Not restarting it; it stays in maint. "
            "Fix the cause (see %s), then retry it: %s (or restart the cluster).",
            self.name, self.policy.recent_deaths(), self.settings.crash_loop_window,
            self.status.last_detail, self.child.log_path, self.retry_hint or "POST /retry on the sidecar",
        )

    def request_restart(self) -> None:
        """Ask for a planned restart (graceful stop, start at once, with the child's current command):
        a crash-looped process is retried, one between two starts just starts next."""
        if self.status.crash_looped:
            self.retry()
        elif self.child.pid is not None:
            self._restart.set()

    async def _planned_restart(self) -> None:
        self._restart.clear()
        logger.info("%s: restarting pid %s, as planned", self.name, self.status.pid)
        await self._stop()
        self.status.restarts += 1
        self.metrics.record_restart(self.status)

    def retry(self) -> bool:
        """Try a crash-looped process again (``POST /retry/NODE/PART``); False if it is not crash-looped."""
        if not self.status.crash_looped:
            return False
        self._retry.set()
        return True

    async def _wait_for_retry(self, stopping: asyncio.Event) -> bool:
        """Wait in the crash loop until an operator asks for a retry (True) or the sidecar stops."""
        retry = asyncio.create_task(self._retry.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({retry, stop}, return_when=asyncio.FIRST_COMPLETED)
        retry.cancel()
        stop.cancel()
        if stopping.is_set():
            return False
        self._retry.clear()
        self.policy.forget_deaths()
        self.status.crash_looped = False
        self.metrics.record_restart(self.status)
        self.status.restarts += 1
        logger.warning("%s: retrying after a crash loop, as asked", self.name)
        return True

    async def _stop(self) -> None:
        if self.child.pid is not None:
            self._set_state(PartState.STOPPING)
            await self.child.tell_haproxy("drain")
            returncode = await self.child.stop()
            logger.info("%s: stopped (exit %s)", self.name, returncode)
        await self.child.tell_haproxy("maint")
        self.status.pid = None
        if self.status.state is not PartState.CRASH_LOOP:
            self._set_state(PartState.STOPPED)
