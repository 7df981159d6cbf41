"""Why a supervised process died.

``DeathClassifier.classify`` looks at the exit status and at the kernel's evidence:

- ``oom_killer``: SIGKILL and the kernel's OOM killer fired meanwhile: the cgroup's
  ``oom_kill`` counter grew (``memory.events`` on cgroup v2, ``memory.oom_control`` on v1)
  or the kernel log names the PID (``/dev/kmsg``, when readable);
- ``oom_exit``: the worker exited with ``EXIT_OOM`` (repeated out-of-memory errors);
- ``load_failed``: the worker exited with ``EXIT_LOAD_FAILED`` (model missing or broken);
- ``hung``: the supervisor killed it within seconds on evidence that it was frozen or stalled
  (``balancer.supervision.hang``); the detail says what was seen;
- ``stuck``: the supervisor killed it because it stopped answering its readiness probe for
  ``stuck_after`` seconds (alive and using CPU, or no hang evidence);
- ``signal``: killed by any other signal (SIGKILL by a person, SIGSEGV, ...);
- ``crash``: any other non-zero exit code; ``exit``: exit code 0 while it should be running.

``hung`` and ``stuck`` are the supervisor's own kills, recorded by it without ``classify``.
``classify`` is a coroutine for the sidecar's event loop: the kernel log (the whole ring buffer,
one record per read) is read in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from webui.contract import EXIT_LOAD_FAILED, EXIT_OOM

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_OOM_LINE = re.compile(r"Killed process (\d+)|oom-kill:.*\bpid=(\d+)")


class DeathCause(str, Enum):
    """The causes the sidecar tells apart (also its metric label values)."""

    OOM_KILLER = "oom_killer"
    OOM_EXIT = "oom_exit"
    LOAD_FAILED = "load_failed"
    HUNG = "hung"
    STUCK = "stuck"
    SIGNAL = "signal"
    CRASH = "crash"
    EXIT = "exit"


@dataclass(frozen=True)
class Death:
    """One death: its cause, the raw exit status and a sentence for the log."""

    cause: DeathCause
    returncode: int | None
    detail: str


class OomKillCounter:
    """Reads the ``oom_kill`` counter of this process's memory cgroup."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def for_this_process(cls, override: Path | None = None) -> OomKillCounter:
        """The counter of the cgroup this process (and so its children) is in, if readable."""
        if override is not None:
            return cls(override)
        for candidate in candidate_counter_files(Path("/proc/self/cgroup")):
            if cls(candidate).read() is not None:
                return cls(candidate)
        logger.info("no readable cgroup oom_kill counter; OOM-killer deaths are told by the kernel log only")
        return cls(None)

    def read(self) -> int | None:
        """The current count, or None when there is no readable counter."""
        if self.path is None:
            return None
        try:
            text = self.path.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None


def candidate_counter_files(proc_cgroup: Path) -> list[Path]:
    """Where the oom_kill counter of a process may be (from its ``/proc/PID/cgroup``), most specific first."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            candidates += [CGROUP_ROOT / relative / "memory.events", CGROUP_ROOT / "memory.events"]
        elif "memory" in controllers.split(","):
            base = CGROUP_ROOT / "memory"
            candidates += [base / relative / "memory.oom_control", base / "memory.oom_control"]
    return candidates


class KernelLog:
    """Looks for the OOM killer's "Killed process PID" line in the kernel log (``/dev/kmsg``).

    ``oom_killed`` blocks while it reads the whole log: call it from a thread on an event loop.
    """

    def __init__(self, path: Path = Path("/dev/kmsg")) -> None:
        self.path = path

    def oom_killed(self, pid: int) -> bool | None:
        """Whether the kernel log says the OOM killer killed ``pid``; None if unreadable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            while True:
                try:
                    record = os.read(fd, 8192)
                except OSError as exc:
                    if exc.errno == errno.EPIPE:  # overwritten while reading: skip ahead
                        continue
                    break  # EAGAIN: end of the log
                if not record:
                    break
                match = _OOM_LINE.search(record.decode(errors="replace"))
                if match and int(match.group(1) or match.group(2)) == pid:
                    return True
        finally:
            os.close(fd)
        return False


class DeathClassifier:
    """Turns an exit status (plus kernel evidence) into a ``Death``.

    The cgroup counter is shared by every process in the cgroup, so each OOM kill it counts
    explains at most one SIGKILL, and only one of a process started before that kill.
    """

    def __init__(self, counter: OomKillCounter, kernel_log: KernelLog) -> None:
        self.counter = counter
        self.kernel_log = kernel_log
        self._explained = counter.read()
        """OOM kills already attributed to a death (or that happened before we started)."""

    def baseline(self) -> int | None:
        """The OOM-kill count to compare against later; take it when a process starts."""
        return self.counter.read()

    async def classify(self, returncode: int | None, pid: int, oom_baseline: int | None) -> Death:
        """Why the process ``pid`` ended with ``returncode`` (negative: killed by that signal)."""
        if returncode is None:
            return Death(DeathCause.CRASH, None, "exit status unknown")
        if returncode == -signal.SIGKILL:
            evidence = await self._oom_killer_evidence(pid, oom_baseline)
            if evidence:
                return Death(DeathCause.OOM_KILLER, returncode, f"killed by the kernel's OOM killer ({evidence})")
        if returncode < 0:
            name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
            return Death(DeathCause.SIGNAL, returncode, f"killed by {name}")
        if returncode == EXIT_OOM:
            return Death(DeathCause.OOM_EXIT, returncode, f"exited with EXIT_OOM ({EXIT_OOM}): repeated out-of-memory")
        if returncode == EXIT_LOAD_FAILED:
            return Death(DeathCause.LOAD_FAILED, returncode, f"exited with EXIT_LOAD_FAILED ({EXIT_LOAD_FAILED})")
        if returncode == 0:
            return Death(DeathCause.EXIT, 0, "exited with code 0 while it should be running")
        return Death(DeathCause.CRASH, returncode, f"exited with code {returncode}")

    async def _oom_killer_evidence(self, pid: int, oom_baseline: int | None) -> str:
        if await asyncio.to_thread(self.kernel_log.oom_killed, pid):
            return f"kernel log: Killed process {pid}"
        # From here on no await: reading and updating _explained is one step for the event loop.
        now = self.counter.read()
        if now is None or oom_baseline is None:
            return ""
        unexplained_since = max(oom_baseline, self._explained or 0)
        if now > unexplained_since:
            self._explained = unexplained_since + 1
            return f"cgroup oom_kill {oom_baseline} -> {now}"
        return ""
