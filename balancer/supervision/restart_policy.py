"""When to restart a process that died, and when to stop trying (crash loop).

The first death is restarted at once; each further death within the window waits twice as
long as the previous one (``backoff_initial``, doubling, capped at ``backoff_max``). Deaths
older than the window are forgotten, so a process that ran fine for a while starts over
with an immediate restart. ``crash_loop_deaths`` deaths within ``crash_loop_window``
seconds is a crash loop: the supervisor stops restarting.

``restart_loop`` is the one loop that applies it, for a node part, HAProxy or keepalived
(``ProcessSupervisor``) and for a worker's warm standby (``StandbyWorker``) alike.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

DeathT = TypeVar("DeathT")


class RestartPolicy:
    """Counts one process's recent deaths; answers "how long to wait" and "give up?"."""

    def __init__(
        self,
        backoff_initial: float,
        backoff_max: float,
        crash_loop_deaths: int,
        crash_loop_window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.crash_loop_deaths = crash_loop_deaths
        self.crash_loop_window = crash_loop_window
        self.clock = clock
        self._deaths: deque[float] = deque()

    def record_death(self) -> None:
        """Note that the process died now."""
        self._deaths.append(self.clock())

    def recent_deaths(self) -> int:
        """Deaths within the window."""
        horizon = self.clock() - self.crash_loop_window
        while self._deaths and self._deaths[0] < horizon:
            self._deaths.popleft()
        return len(self._deaths)

    def forget_deaths(self) -> None:
        """Start afresh (an operator fixed the cause and asked for another try)."""
        self._deaths.clear()

    def crash_looping(self) -> bool:
        """Too many deaths within the window: stop restarting."""
        return self.recent_deaths() >= self.crash_loop_deaths

    def next_delay(self) -> float:
        """Seconds to wait before the next restart: 0 after one recent death, then doubling."""
        deaths = self.recent_deaths()
        if deaths <= 1:
            return 0.0
        return min(self.backoff_max, self.backoff_initial * 2 ** (deaths - 2))


async def restart_loop(policy: RestartPolicy, attempt: Callable[[], Awaitable[DeathT | None]],
                       died: Callable[[DeathT], None], crash_looped: Callable[[], Awaitable[bool]],
                       back_off: Callable[[float], Awaitable[bool]]) -> None:
    """Run ``attempt`` (start a process and watch it) again each time it ends in a death, under ``policy``.

    ``attempt`` answers why its process died, or None when supervision is to end (a stop). Each death is
    counted and handed to ``died``; then, in a crash loop, ``crash_looped`` decides whether to go on (an
    operator's retry: True) or end (False); otherwise ``back_off`` waits the policy's delay and says
    whether to go on (False: a stop came meanwhile).
    """
    while (death := await attempt()) is not None:
        policy.record_death()
        died(death)
        if policy.crash_looping():
            if not await crash_looped():
                return
        elif not await back_off(policy.next_delay()):
            return
