"""Shared test helpers: free ports, processes the tests start (and always stop), waiting.

Every process a test starts goes through ``Processes.start`` so that it is killed, by its
own PID (and its children's), when the test or fixture ends, even on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "test-artifacts" / "logs"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, status: int = 200, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> httpx.Response:
    """Poll ``url`` until it answers ``status``; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} while waiting for {url}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last!r})")


def blank_png(path: Path, width: int, height: int) -> Path:
    """Write a black greyscale PNG of ``width`` x ``height``: a pixel bomb of a few hundred KB at most."""
    Image.new("L", (width, height)).save(path, optimize=True)
    return path


def reset_peak_rss(pid: int | str = "self") -> int:
    """Reset a process's peak resident memory (Linux ``clear_refs``); return its resident bytes now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return psutil.Process(None if pid == "self" else int(pid)).memory_info().rss


def peak_rss(pid: int | str = "self") -> int:
    """A process's peak resident memory in bytes since it started or since ``reset_peak_rss``."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024


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

    def start(self, args: list[str], env: dict[str, str] | None = None, log_name: str | None = None) -> subprocess.Popen:
        """Start ``args`` (``python`` is this interpreter) with its output in test-artifacts/logs."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        if args and args[0] == "python":
            args = [sys.executable, *args[1:]]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_path = LOG_DIR / f"{log_name or self.name}-{len(self.procs)}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(args, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        log.close()
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM each started process tree, then SIGKILL what is left."""
        for proc in self.procs:
            if proc.poll() is None:
                kill_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_tree(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
