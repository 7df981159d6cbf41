"""What a dead keepalived leaves behind, cleared before the next one starts: its processes, its address, its pid files.

keepalived runs as the process the sidecar started (``--dont-fork``) and a VRRP child that holds the
floating address. Killed by SIGKILL, neither removes anything: the VRRP child outlives its parent for a
moment (the sidecar kills the parent's process group, but the child still has to exit and be reaped), the
floating address stays on the interface (the other balancer takes it after missing adverts: both would hold
it), and the pid files stay, so a keepalived started at once refuses ("daemon is already running") while
the child's PID still exists, a zombie included. ``Leftovers.clear``, called when keepalived exited and
before each start, in this order:

1. waits (bounded) until no process of the last keepalived's process group runs (gone, or a zombie that
   holds nothing), SIGKILLing the group again meanwhile: only the group the sidecar created, whose id is
   the PID it started;
2. removes the floating address from its interface, if it is there (``ip addr del``);
3. removes each pid file that names no running keepalived (gone, a zombie, or a PID since reused by another
   program). One naming a running keepalived, not ours, is left: keepalived then refuses and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

KEEPALIVED = "keepalived"
GROUP_EXIT_TIMEOUT = 3.0
"""Seconds the last keepalived's processes have to end before the next one is started anyway."""
POLL = 0.01
IP_TIMEOUT = 5.0
"""Seconds one ``ip`` command may take."""


def running_in_group(group: int) -> list[int]:
    """PIDs of the processes of process group ``group`` that still run (zombies excluded)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


def running_keepalived(pid: int) -> bool:
    """Whether ``pid`` is a keepalived that runs (not a zombie, not another program that got the PID since)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.name() == KEEPALIVED
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Leftovers:
    """A keepalived's floating address (``address``/``prefix`` on ``interface``) and pid files."""

    address: str
    prefix: int
    interface: str
    pid_files: tuple[Path, ...]
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    """One clearing at a time (an exit and a stop may both ask)."""

    def clear(self, group: int | None) -> None:
        """End what is left of process group ``group`` (the last keepalived's; None: none started yet), then
        take the floating address off the interface and remove stale pid files (blocking: run it in a thread)."""
        with self.lock:
            if group is not None:
                self._end_group(group)
            self._release_address()
            for path in self.pid_files:
                self._remove_if_stale(path)

    def _end_group(self, group: int) -> None:
        deadline = time.monotonic() + GROUP_EXIT_TIMEOUT
        while left := running_in_group(group):
            if time.monotonic() > deadline:
                logger.error("keepalived: processes %s of the last keepalived still run %.0f s after SIGKILL; "
                             "starting a new one anyway", left, GROUP_EXIT_TIMEOUT)
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
            time.sleep(POLL)

    def _ip(self, *args: str) -> str:
        return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=IP_TIMEOUT).stdout

    def _release_address(self) -> None:
        try:
            listed = self._ip("-o", "addr", "show", "dev", self.interface)
            if f" {self.address}/" not in listed:
                return
            self._ip("addr", "del", f"{self.address}/{self.prefix}", "dev", self.interface)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            logger.error("keepalived: could not take the floating address %s off %s: %s", self.address,
                         self.interface, str(detail).strip())
            return
        logger.warning("keepalived: it ended holding %s: took the address off %s (the other balancer takes it "
                       "over; never both at once)", self.address, self.interface)

    def _remove_if_stale(self, path: Path) -> None:
        try:
            pid = int(path.read_text(encoding="ascii").split()[0])
        except FileNotFoundError:
            return
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            pid = None  # unreadable: names no keepalived
        if pid is not None and running_keepalived(pid):
            logger.warning("keepalived: %s names pid %d, a keepalived that still runs; leaving it (a new one "
                           "refuses to start while it runs)", path, pid)
            return
        path.unlink(missing_ok=True)
        logger.info("keepalived: removed the stale pid file %s", path)
