"""A scripted ``Child`` for ``ProcessSupervisor``, and a loop of virtual time to run it on (tests/test_supervisor.py).

``FakeChild`` lives the ``Life`` each start takes (ready after, exits after, its probe failing how, frozen or
busy), records a timeline (what HAProxy was told, starts, exits, stops, kills, state changes) in virtual
seconds, and answers the hang detector's look at its process. ``supervise`` runs the real supervisor, restart
policy, death classifier and metrics around it while a scenario drives them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from balancer.api.metrics import SidecarMetrics
from balancer.config.health import SidecarSpec
from balancer.haproxy.runtime_protocol import ServerState
from balancer.supervision.causes import DeathClassifier, KernelLog, OomKillCounter
from balancer.supervision.child import StartFailed
from balancer.supervision.hang import Activity, ProbeAnswer
from balancer.supervision.state import PartStatus
from balancer.supervision.supervisor import ProcessSupervisor
from tests.virtual_time import START, run

SETTINGS = SidecarSpec()
OK = ProbeAnswer(ok=True)
LOADING = ProbeAnswer(ok=False)
"""An answer that is not ready (503, a refused connection)."""
SILENT = ProbeAnswer(ok=False, answered=False)
"""No answer within the probe's timeout."""
STALLED = ProbeAnswer(ok=False, stalled="no denoising step for 40 s")


@dataclass(frozen=True)
class Life:
    """One process the fake child starts, scripted in seconds since its start."""

    ready_after: float | None = 0.0
    """Its probe answers ok from then on; None: never."""
    exits_after: float | None = None
    returncode: int = 1
    fails_after: float | None = None
    failing: ProbeAnswer = SILENT
    """What its probe answers from ``fails_after`` on (``SILENT``: nothing, after the probe's timeout)."""
    frozen: bool = True
    """While it fails: no CPU used and no thread runnable (hung), rather than busy."""
    start_fails: str | None = None


class FakeChild:
    """A ``Child`` in memory: each start takes the next ``Life`` (the last one repeats); a timeline of it all."""

    log_path = Path("/nonexistent/fake.log")
    probe_target = "http://fake/readyz"

    def __init__(self, *lives: Life) -> None:
        self.lives = list(lives)
        self.timeline: list[str] = []
        self.starts = 0
        self.closed = False
        self._life = Life()
        self._started_at = 0.0
        self._exit: asyncio.Future[int] | None = None

    def note(self, what: str) -> None:
        self.timeline.append(f"{asyncio.get_running_loop().time() - START:g} {what}")

    @property
    def pid(self) -> int | None:
        return 1000 + self.starts if self._exit is not None and not self._exit.done() else None

    async def start(self) -> int:
        self._life = self.lives.pop(0) if len(self.lives) > 1 else self.lives[0]
        if self._life.start_fails:
            self.note("start failed")
            raise StartFailed(self._life.start_fails)
        loop = asyncio.get_running_loop()
        self.starts += 1
        self._started_at = loop.time()
        self._exit = loop.create_future()
        if self._life.exits_after is not None:
            loop.call_later(self._life.exits_after, self._end, self._life.returncode, "exit")
        self.note(f"start {self.pid}")
        return 1000 + self.starts

    def _end(self, returncode: int, how: str) -> None:
        if self._exit is not None and not self._exit.done():
            self.note(f"{how} {returncode}")
            self._exit.set_result(returncode)

    async def wait(self) -> int:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    def _age(self) -> float:
        return asyncio.get_running_loop().time() - self._started_at

    def _failing(self) -> bool:
        return self._life.fails_after is not None and self._age() >= self._life.fails_after

    async def probe(self) -> ProbeAnswer:
        if self._failing():
            if not self._life.failing.answered:
                await asyncio.sleep(SETTINGS.probe_timeout)
            return self._life.failing
        return OK if self._life.ready_after is not None and self._age() >= self._life.ready_after else LOADING

    def look(self, pid: int, now: float) -> Activity | None:
        """The hang detector's look at the process: frozen (no CPU, nothing runnable) or busy."""
        if pid != self.pid:
            return None
        if self._failing() and self._life.frozen:
            return Activity(now, 1.0, runnable=False, state="stopped")
        return Activity(now, now, runnable=True, state="running")

    async def stop(self) -> int | None:
        self._end(-15, "stopped")
        return -15

    async def kill(self) -> int | None:
        self._end(-9, "killed")
        return -9

    async def tell_haproxy(self, state: ServerState) -> None:
        self.note(f"haproxy {state}")

    async def aclose(self) -> None:
        self.closed = True


class Metrics(SidecarMetrics):
    """The sidecar's metrics; each state change after the part's registration also goes on the child's timeline."""

    def __init__(self, child: FakeChild) -> None:
        super().__init__()
        self.child = child
        self.registered = False

    def register(self, status: PartStatus) -> None:
        super().register(status)
        self.registered = True

    def set_state(self, status: PartStatus) -> None:
        super().set_state(status)
        if self.registered:
            self.child.note(status.state.value)


Scenario = Callable[[ProcessSupervisor, asyncio.Event], Awaitable[None]]


def supervise(child: FakeChild, scenario: Scenario) -> ProcessSupervisor:
    """Run a supervisor of ``child`` while ``scenario`` drives it (it sets the stop, or the test does at its end)."""

    async def main() -> ProcessSupervisor:
        loop = asyncio.get_running_loop()
        classifier = DeathClassifier(OomKillCounter(None), KernelLog(Path("/nonexistent/kmsg")))
        status = PartStatus(node="node1", part="worker", backend="workers", url="http://fake")
        supervisor = ProcessSupervisor(status, child, SETTINGS, classifier, Metrics(child), clock=loop.time,
                                       look=child.look)
        stopping = asyncio.Event()
        running = asyncio.create_task(supervisor.run(stopping))
        try:
            await scenario(supervisor, stopping)
        finally:
            stopping.set()
            await running
        return supervisor

    return run(main())


def until(seconds: float) -> Scenario:
    """A scenario that lets the supervisor run until ``seconds`` (virtual), then stops it."""

    async def scenario(supervisor: ProcessSupervisor, stopping: asyncio.Event) -> None:
        await asyncio.sleep(seconds)

    return scenario
