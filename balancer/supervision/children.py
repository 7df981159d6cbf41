"""The processes the sidecar supervises (``balancer.supervision.child.Child``): node parts and HAProxy.

- ``CommandProcess``: a command line in its own process group (output appended to its log);
- ``NodeProcess``: a web front or worker (or a balancer's jobs service), a ``CommandProcess`` probed over
  HTTP (a timeout is no answer; a worker's ``/readyz`` may report a stall), its HAProxy server set through the gate
  (``balancer.multihost.keepalived.KeepalivedChild`` is another kind of ``CommandProcess``);
- ``HAProxyChild``: HAProxy itself (``HAProxyProcess``, started and stopped in a worker thread),
  probed over its runtime API; once it answers after a (re)start, every server's state is
  told to it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path

import httpx
import psutil

from balancer.haproxy.gate import HAProxyGate
from balancer.haproxy.process import HAProxyError, HAProxyProcess
from balancer.haproxy.runtime_api import AsyncRuntimeAPI
from balancer.haproxy.runtime_protocol import ServerState
from balancer.supervision.child import StartFailed
from balancer.supervision.hang import ProbeAnswer
from balancer.supervision.part_probe import ProbeTLS, part_client, stall_report
from balancer.system.lifetime import terminate_with_parent
from balancer.system.run_dir import open_private_log, private_dir

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""Where ``webui``, ``jobs`` and ``balancer`` live: on every child's import path (``python -m webui.web`` finds its
package from wherever launch.py was started; the working directory stays, for relative paths in settings)."""


def child_environment(env: dict[str, str] | None) -> dict[str, str]:
    """``env`` (else this process's) with the project on ``PYTHONPATH``, first."""
    env = dict(os.environ if env is None else env)
    paths = [str(PROJECT_ROOT), *(path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def process_family(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def send_signal(procs: list[psutil.Process], sig: int) -> None:
    """Signal each process that is still there."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group we created (its leader's PID is the group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class CommandProcess:
    """A process run from its command line, in a process group of its own (output appended to its log)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path, stop_grace: float,
                 private_dirs: tuple[Path, ...] = ()) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_path
        self.stop_grace = stop_grace
        self.private_dirs = private_dirs
        """Directories made (0700, ours) before each start, parents first."""
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running process, None when there is none."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> int:
        """Start the command (private dirs made first); its PID."""
        for directory in self.private_dirs:
            private_dir(directory)
        with open_private_log(self.log_path) as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=child_environment(self.env),
                start_new_session=True,
                preexec_fn=terminate_with_parent,
            )
        return self.proc.pid

    async def wait(self) -> int:
        """Exit status once it exited; what is left of its process group is killed (no orphans)."""
        assert self.proc is not None
        returncode = await self.proc.wait()
        kill_group(self.proc.pid)
        return returncode

    async def stop(self) -> int | None:
        """SIGTERM, SIGKILL after the stop grace."""
        return await self._terminate(self.stop_grace)

    async def kill(self) -> int | None:
        """SIGKILL at once."""
        return await self._terminate(0.0)

    async def _terminate(self, grace: float) -> int:
        """SIGTERM the process and its descendants, SIGKILL after ``grace`` (0: at once); then its whole group."""
        assert self.proc is not None
        family = process_family(self.proc.pid) if self.proc.returncode is None else []
        send_signal(family, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=grace or None)
        except TimeoutError:
            logger.warning("%s: still running %.0f s after SIGTERM: SIGKILL", self.name, grace)
            send_signal(family, signal.SIGKILL)
        returncode = await self.proc.wait()
        send_signal(family[1:], signal.SIGKILL)  # descendants that ignored SIGTERM
        kill_group(self.proc.pid)
        return returncode


class NodeProcess(CommandProcess):
    """A node part (web front or worker): probed over HTTP, its HAProxy server set through the gate."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        probe_url: str,
        probe_timeout: float,
        stop_grace: float,
        gate: HAProxyGate,
        server: tuple[str, str],
        private_dirs: tuple[Path, ...] = (),
        probe_tls: ProbeTLS | None = None,
    ) -> None:
        super().__init__(name, command, env, log_path, stop_grace, private_dirs)
        self.probe_target = probe_url
        self.gate = gate
        self.server = server
        """(backend, server) in HAProxy."""
        self._extensions = probe_tls.extensions if probe_tls is not None else {}
        """With mutual TLS (a node host's part): the name its certificate must carry (``multihost.part_tls``)."""
        self._http = part_client(probe_timeout, probe_tls)

    async def probe(self) -> ProbeAnswer:
        """Whether its probe URL answers 200; no answer at all (timeout); a worker's own stall report."""
        try:
            response = await self._http.get(self.probe_target, extensions=self._extensions)
        except httpx.TimeoutException:
            return ProbeAnswer(ok=False, answered=False)
        except httpx.HTTPError:
            return ProbeAnswer(ok=False)
        return ProbeAnswer(ok=response.status_code == 200, stalled=stall_report(response))

    async def tell_haproxy(self, state: ServerState) -> None:
        """Set its server's state in HAProxy."""
        await self.gate.set_state(*self.server, state)

    async def aclose(self) -> None:
        """Close the probe's HTTP client."""
        await self._http.aclose()


class HAProxyChild:
    """HAProxy as a supervised process: ``HAProxyProcess`` does the work, in a worker thread.

    The worker threads of asyncio's default executor live as long as the event loop, so
    HAProxy's parent-death signal (``balancer.system.lifetime``) fires only when the sidecar dies.
    """

    EXIT_POLL = 0.1
    """Seconds between checks whether HAProxy exited."""

    def __init__(self, haproxy: HAProxyProcess, api: AsyncRuntimeAPI, gate: HAProxyGate) -> None:
        self.haproxy = haproxy
        self.api = api
        self.gate = gate
        self.log_path = haproxy.log_path
        self.probe_target = str(api.socket_path)
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running HAProxy, None when there is none."""
        return self.haproxy.pid

    async def start(self) -> int:
        """Validate the configuration, start HAProxy and wait until its runtime API answers; its PID."""
        try:
            await asyncio.to_thread(self.haproxy.start)
        except HAProxyError as exc:
            raise StartFailed(str(exc)) from exc
        assert self.haproxy.proc is not None
        self._proc = self.haproxy.proc
        return self._proc.pid

    async def wait(self) -> int:
        """HAProxy's exit status once it exited."""
        assert self._proc is not None
        while (returncode := self._proc.poll()) is None:
            await asyncio.sleep(self.EXIT_POLL)
        return returncode

    async def probe(self) -> ProbeAnswer:
        """Whether the runtime API answers (its failures count toward ``stuck_after`` only)."""
        return ProbeAnswer(ok=await self.api.ping())

    async def stop(self) -> int | None:
        """Soft-stop (open requests finish), SIGTERM, then SIGKILL (``HAProxyProcess.stop``)."""
        return await asyncio.to_thread(self.haproxy.stop)

    async def kill(self) -> int | None:
        """Stop it with no soft-stop wait."""
        return await asyncio.to_thread(self.haproxy.stop, 0.0)

    async def tell_haproxy(self, state: ServerState) -> None:
        """Once HAProxy answers (after each start), tell it every server's state again."""
        if state == "ready":
            await self.gate.reapply()

    async def aclose(self) -> None:
        """Nothing to release."""
