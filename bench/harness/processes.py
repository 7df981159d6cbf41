"""Processes a test or benchmark starts (and always stops), and free ports for them (``bench.harness.ports``).

Every process the tests and benchmarks start goes through ``Processes.start`` so that it is
killed, by its own PID (and its children's), when the test, fixture or benchmark ends, even on
failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.harness.ports import ALLOCATOR

logger = logging.getLogger(__name__)

TEARDOWN_GRACE = 1.0
"""Seconds a process may take to stop when its test or benchmark ends: how it stops is no longer under test then
(a web front finishing its calls takes 3 s), and every teardown waited for it."""

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "test-artifacts" / "logs" / os.environ.get("PYTEST_XDIST_WORKER", "")
"""Processes' logs; one folder per pytest-xdist worker, so two test processes never write one file."""


def free_port() -> int:
    """A TCP port for a server this process starts: free now, outside the ephemeral range, and never handed out
    before in this process (``bench.harness.ports``)."""
    return ALLOCATOR.reserve()


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``pid`` and all its descendants (only processes we started)."""
    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


class Processes:
    """Starts subprocesses for a test and guarantees they are gone afterwards."""

    def __init__(self, name: str = "test") -> None:
        self.name = name
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str] | None = None,
              log_name: str | None = None, cwd: Path = REPO) -> subprocess.Popen:
        """Start ``args`` (``python`` is this interpreter) in ``cwd`` with its output in test-artifacts/logs."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        if args and args[0] == "python":
            args = [sys.executable, *args[1:]]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_path = LOG_DIR / f"{log_name or self.name}-{len(self.procs)}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        log.close()
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM each started process tree, then SIGKILL what is left after ``grace`` seconds."""
        for proc in self.procs:
            if proc.poll() is None:
                kill_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %g s of SIGTERM: killing it", proc.args, grace)
            kill_tree(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all(TEARDOWN_GRACE)
