"""Telling a hung process from a slow one, so that the supervisor replaces it in seconds (cause ``hung``).

Either of two kinds of evidence is enough:

1. **frozen** (SIGSTOP, a deadlock holding the GIL, a wait in the kernel's D state): its probe
   has had no answer for ``hang_after`` seconds, and over the last ``hang_after`` seconds the
   process used at most ``hang_cpu_seconds`` of CPU time and none of its threads was seen
   runnable. A CPU-starved process wants the CPU (a thread waits runnable in the run queue) or
   gets some: it is not hung, and only ``stuck_after`` applies to it, as to a process that is
   busy but does not answer (a long call holding the GIL).
2. **stalled**: a worker says so itself: its ``/readyz`` answers 503 with ``stalled`` (its
   running job's denoising loop made no step for far longer than usual, see
   ``webui.worker.progress``) while its event loop still answers: a stuck driver call.

Neither applies while a process starts (``start_timeout`` does). The samples come from small
``/proc`` files (``psutil`` and ``/proc/PID/task/*/stat``), read when a probe goes out after an
answer and every ``hang_check_interval`` while it is late: quick reads that do not block, so
they run on the sidecar's event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

RUNNABLE = "R"
"""A thread's state in ``/proc/PID/task/TID/stat`` while it runs or waits for a CPU."""


@dataclass(frozen=True)
class ProbeAnswer:
    """What one readiness probe got back."""

    ok: bool
    """Ready (200)."""
    answered: bool = True
    """False when nothing came back within the probe's timeout (a refused connection is an answer)."""
    stalled: str | None = None
    """The worker's own stall report (its ``/readyz`` 503 ``stalled``), else None."""


@dataclass(frozen=True)
class Activity:
    """One look at a process: its CPU time so far and whether a thread was runnable."""

    at: float
    cpu_seconds: float
    """User + system time of all its threads."""
    runnable: bool
    state: str
    """psutil's status of the process (``stopped``, ``sleeping``, ``disk-sleep``, ...)."""


def runnable_thread(pid: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether a thread of ``pid`` runs or waits for a CPU now."""
    for stat in (proc_root / str(pid) / "task").glob("*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        if fields and fields[0] == RUNNABLE:
            return True
    return False


def look_at(pid: int, now: float) -> Activity | None:
    """The process's ``Activity`` now, or None when it is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            state = proc.status()
    except psutil.Error:
        return None
    return Activity(now, times.user + times.system, runnable_thread(pid), state)


class HangDetector:
    """Watches one supervised process's probe silence and activity; says when it is frozen.

    The supervisor calls ``probe_sent`` and ``probe_done`` around each probe, and ``check``
    every ``hang_check_interval`` seconds while a probe waits for its answer.
    """

    def __init__(self, name: str, probe_target: str, hang_after: float, hang_cpu_seconds: float,
                 look: Callable[[int, float], Activity | None] = look_at) -> None:
        self.name = name
        self.probe_target = probe_target
        self.hang_after = hang_after
        self.hang_cpu_seconds = hang_cpu_seconds
        self._look = look
        self._pid: int | None = None
        self.silent_since: float | None = None
        """When the first probe still without an answer was sent; None while probes are answered."""
        self._samples: deque[Activity] = deque()
        self._starved_noted = False

    def probe_sent(self, pid: int | None, now: float) -> None:
        """A probe of process ``pid`` went out at ``now``."""
        if self.silent_since is not None and pid == self._pid:
            return  # still silent since an earlier probe
        self._pid, self.silent_since, self._starved_noted = pid, now, False
        self._samples.clear()
        self._sample(now)

    def probe_done(self, answer: ProbeAnswer) -> None:
        """A probe ended; an answer (any status) ends the silence."""
        if answer.answered:
            self.silent_since = None
            self._samples.clear()

    def check(self, now: float) -> str | None:
        """The evidence when the process is frozen now, else None."""
        if self.silent_since is None or self._pid is None:
            return None
        latest = self._sample(now)
        silent = now - self.silent_since
        if latest is None or silent < self.hang_after:
            return None
        baseline = self._baseline(now)
        used = latest.cpu_seconds - baseline.cpu_seconds
        runnable = any(sample.runnable for sample in self._samples)
        if used <= self.hang_cpu_seconds and not runnable:
            return (f"no answer to {self.probe_target} for {silent:.1f} s; in the last {now - baseline.at:.1f} s "
                    f"{used:.2f} CPU-s used and no thread runnable (process state {latest.state})")
        if not self._starved_noted:
            self._starved_noted = True
            logger.info("%s: no answer to its probe for %.1f s, but it is %s: slow or CPU-starved, not hung "
                        "(stuck_after applies)", self.name, silent,
                        "runnable" if runnable else f"using CPU ({used:.2f} CPU-s in {now - baseline.at:.1f} s)")
        return None

    def _sample(self, now: float) -> Activity | None:
        sample = self._look(self._pid, now) if self._pid is not None else None
        if sample is not None:
            self._samples.append(sample)
        return sample

    def _baseline(self, now: float) -> Activity:
        """The latest sample at least ``hang_after`` old (older ones are dropped): the window's start."""
        while len(self._samples) > 1 and self._samples[1].at <= now - self.hang_after:
            self._samples.popleft()
        return self._samples[0]
