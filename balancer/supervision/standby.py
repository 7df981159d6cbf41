"""Warm standby workers: a worker's replacement, loaded and waiting, promoted when the worker dies.

A managed worker with ``standby: true`` (``launch.py --standby``) runs as ``WorkerWithStandby``:

- once the active worker answers its probe, a ``StandbyWorker`` starts a second process of the same
  command with ``--standby READY_FILE`` (``webui.worker.standby``): it imports everything, loads the
  model into host memory, writes READY_FILE and waits, without the port;
- when the active worker dies (any cause: crash, kernel or worker OOM, hung, stuck), the supervisor's
  restart (``start``) promotes a loaded standby instead of starting a cold process: the go signal
  (``STANDBY_GO_SIGNAL``), and its PID becomes the worker's; it moves the model to the GPU, warms
  up, binds the port and answers ``/readyz``. The supervisor treats it like any started worker
  (probe, hang detector, restarts, crash loop). A standby still loading is not promoted: the worker
  starts cold, and the standby stays for the next death;
- a standby that exits before its promotion (a model that cannot load) is restarted under its own
  ``RestartPolicy`` and given up after a crash loop (ERROR log, ``standby.state: failed``); a
  standby that does not load within ``start_timeout`` is killed. The active worker is unaffected;
- on stop the standby gets SIGTERM (SIGKILL after ``stop_grace``), its process group killed.

``/status`` shows it under the worker's ``standby``: ``state`` (``loading``, ``waiting``, ``backoff``,
``failed``), ``pid``, ``starts``, ``promotions``, ``failures``, ``last_detail``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from balancer.config.health import SidecarSpec
from balancer.supervision.child import StartFailed
from balancer.supervision.children import NodeProcess
from balancer.supervision.hang import ProbeAnswer
from balancer.supervision.restart_policy import RestartPolicy, restart_loop
from webui.contract import STANDBY_GO_SIGNAL
from webui.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

STANDBY_FLAG = "--standby"
"""The worker's flag that makes it a warm standby (its value: the ready file)."""
READY_POLL = 0.2
"""Seconds between looks at a loading standby's ready file (a local ``stat``)."""


class StandbyState(str, Enum):
    """Where a worker's standby is."""

    LOADING = "loading"
    WAITING = "waiting"
    BACKOFF = "backoff"
    FAILED = "failed"
    """Crash-looped: no more standbys for this worker until the sidecar restarts."""


class StandbyWorker:
    """Keeps one warm standby process of a worker: starts it, watches it load, hands it over on death."""

    def __init__(self, process: NodeProcess, ready_file: Path, settings: SidecarSpec,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``process`` runs the standby's command (the worker's, with ``--standby READY_FILE``); ``clock`` reads
        the time the event loop's timers run on (as ``ProcessSupervisor``'s)."""
        self.process = process
        self.ready_file = ready_file
        self.settings = settings
        self.clock = clock
        self.policy = RestartPolicy(settings.backoff_initial, settings.backoff_max, settings.crash_loop_deaths,
                                    settings.crash_loop_window, clock)
        self.state: StandbyState | None = None
        self.starts = 0
        self.promotions = 0
        self.failures = 0
        self.last_detail = ""
        self._task: asyncio.Task | None = None

    def snapshot(self) -> dict[str, Any]:
        """For ``/status``: state, PID and counts."""
        return {"state": self.state.value if self.state else None, "pid": self.process.pid, "starts": self.starts,
                "promotions": self.promotions, "failures": self.failures, "last_detail": self.last_detail}

    def ensure(self) -> None:
        """Start a standby in the background unless one is there (or being restarted, or given up)."""
        if self._task is None and self.state is not StandbyState.FAILED:
            self._task = asyncio.create_task(self._keep(), name=f"{self.process.name}")

    def take(self) -> asyncio.subprocess.Process | None:
        """The loaded standby's process, handed over (told to go), or None when none is loaded."""
        proc = self.process.proc
        if self.state is not StandbyState.WAITING or proc is None or proc.returncode is not None:
            return None
        assert self._task is not None
        self._task.cancel()
        self._task = None
        self.process.proc = None
        self.state = None
        self.promotions += 1
        self.ready_file.unlink(missing_ok=True)
        proc.send_signal(STANDBY_GO_SIGNAL)
        logger.warning("%s: promoted pid %d to active worker", self.process.name, proc.pid)
        return proc

    async def stop(self) -> None:
        """Stop the standby (SIGTERM, SIGKILL after the grace, its process group) and its watch."""
        await cancel_and_wait(self._task)
        self._task = None
        if self.process.pid is not None:
            returncode = await self.process.stop()
            logger.info("%s: stopped (exit %s)", self.process.name, returncode)
        self.ready_file.unlink(missing_ok=True)

    async def _keep(self) -> None:
        """Start the standby and watch it until it is taken (this task is cancelled then), restarting
        it when it fails; give up on a crash loop (the supervisor's ``restart_loop``)."""
        await restart_loop(self.policy, self._attempt, self._failed, self._give_up, self._back_off)

    async def _attempt(self) -> str:
        """Start a standby and watch it load and wait; why it ended."""
        self.ready_file.unlink(missing_ok=True)
        self.state = StandbyState.LOADING
        try:
            pid = await self.process.start()
        except (StartFailed, OSError) as exc:
            return f"did not start: {exc}"
        self.starts += 1
        logger.info("%s: started pid %d (loading)", self.process.name, pid)
        return await self._watch()

    def _failed(self, detail: str) -> None:
        self.failures += 1
        self.last_detail = detail

    async def _give_up(self) -> bool:
        self.state = StandbyState.FAILED
        logger.error("%s: CRASH LOOP: %d failures within %.0f s (last: %s); no standby for this worker "
                     "(see %s)", self.process.name, self.policy.recent_deaths(),
                     self.settings.crash_loop_window, self.last_detail, self.process.log_path)
        self._task = None
        return False

    async def _back_off(self, delay: float) -> bool:
        logger.warning("%s: failed (%s); another in %.1f s", self.process.name, self.last_detail, delay)
        self.state = StandbyState.BACKOFF
        await asyncio.sleep(delay)
        return True

    async def _watch(self) -> str:
        """Wait while the standby loads and waits; why it ended (it exited, or never loaded and was killed)."""
        proc = self.process.proc
        assert proc is not None
        started = self.clock()
        exited = asyncio.ensure_future(self.process.wait())
        try:
            while not self.ready_file.exists():
                done, _ = await asyncio.wait({exited}, timeout=READY_POLL)
                if done:
                    return f"exited with status {exited.result()} while loading"
                if self.clock() - started > self.settings.start_timeout:
                    await self.process.kill()
                    return f"not loaded within {self.settings.start_timeout:.0f} s: killed"
            self.state = StandbyState.WAITING
            logger.info("%s: pid %d loaded after %.1f s, waiting", self.process.name, proc.pid,
                        self.clock() - started)
            return f"exited with status {await exited} while waiting"
        finally:
            exited.cancel()


def standby_worker(name: str, command: list[str], run_dir: Path, settings: SidecarSpec,
                   process: dict[str, Any]) -> StandbyWorker:
    """The ``StandbyWorker`` of worker ``name``: its command with ``--standby RUN_DIR/standby/NAME.ready``,
    and ``process`` (``NodeProcess``'s keyword arguments: environment, log, ...) as the worker's."""
    directory = run_dir / "standby"
    ready_file = directory / f"{name.replace('/', '-')}.ready"
    own = {**process, "private_dirs": (*process.get("private_dirs", ()), directory)}
    standby = NodeProcess(f"{name} standby", [*command, STANDBY_FLAG, str(ready_file)], **own)
    return StandbyWorker(standby, ready_file, settings)


class WorkerWithStandby(NodeProcess):
    """A worker whose restarts promote its warm standby when one is loaded (see the module doc)."""

    def __init__(self, *args: Any, standby: StandbyWorker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.standby = standby

    async def start(self) -> int:
        """Promote the loaded standby (its PID), else start a cold worker."""
        proc = self.standby.take()
        if proc is None:
            return await super().start()
        self.proc = proc
        return proc.pid

    async def probe(self) -> ProbeAnswer:
        """The worker's probe; once it is ready, a standby is started behind it if there is none."""
        answer = await super().probe()
        if answer.ok:
            self.standby.ensure()
        return answer

    async def stop(self) -> int | None:
        """Stop the standby, then the worker."""
        await self.standby.stop()
        return await super().stop()

    async def aclose(self) -> None:
        """Stop the standby (also when the worker is not running), then release the probe clients."""
        await self.standby.stop()
        await self.standby.process.aclose()
        await super().aclose()
