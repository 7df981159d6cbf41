"""A warm standby's keep loop (``StandbyWorker``, the supervisor's ``restart_loop``), in process on virtual time.

The standby's process is a ``FakeStandby`` that "loads" (writes the ready file) or exits when scripted; the
``StandbyWorker``, its restart policy and the ready file are real. Timings are ``SidecarSpec``'s defaults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from balancer.config.health import SidecarSpec
from balancer.supervision.standby import StandbyState, StandbyWorker
from tests.virtual_time import START, run
from webui.contract import EXIT_LOAD_FAILED, STANDBY_GO_SIGNAL

SETTINGS = SidecarSpec()


@dataclass
class FakeProc:
    """The standby's ``asyncio.subprocess.Process``: its PID, exit status and the signals it was sent."""

    pid: int
    returncode: int | None = None
    signals: tuple[int, ...] = ()

    def send_signal(self, signal: int) -> None:
        self.signals += (signal,)


class FakeStandby:
    """The standby's ``NodeProcess``: each start loads after ``loads_after`` s (None: never) or exits with
    ``returncode`` after ``exits_after`` s (None: never); a timeline of its starts, exits and kills."""

    name = "node1/worker standby"
    log_path = Path("/nonexistent/standby.log")

    def __init__(self, ready_file: Path, loads_after: float | None, exits_after: float | None = None,
                 returncode: int = EXIT_LOAD_FAILED) -> None:
        self.ready_file = ready_file
        self.loads_after, self.exits_after, self.returncode = loads_after, exits_after, returncode
        self.proc: FakeProc | None = None
        self.timeline: list[str] = []
        self._exit: asyncio.Future[int] | None = None

    def note(self, what: str) -> None:
        self.timeline.append(f"{asyncio.get_running_loop().time() - START:g} {what}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.proc = FakeProc(2000 + len(self.timeline))
        self._exit = loop.create_future()
        if self.loads_after is not None:
            loop.call_later(self.loads_after, self.ready_file.touch)
        if self.exits_after is not None:
            loop.call_later(self.exits_after, self._end, self.returncode, "exit")
        self.note("start")
        return self.proc.pid

    def _end(self, returncode: int, how: str) -> None:
        if self.proc is not None and self._exit is not None and not self._exit.done():
            self.proc.returncode = returncode
            self.note(f"{how} {returncode}")
            self._exit.set_result(returncode)

    async def wait(self) -> int:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    async def kill(self) -> int | None:
        self._end(-9, "killed")
        return -9

    async def stop(self) -> int | None:
        self._end(-15, "stopped")
        return -15


def keep(tmp_path: Path, scenario: Callable[[StandbyWorker, FakeStandby], Awaitable[None]], **script) -> FakeStandby:
    """Run ``scenario`` with a ``StandbyWorker`` of a ``FakeStandby`` (``script``: its ``loads_after``, ...)."""

    async def main() -> FakeStandby:
        ready_file = tmp_path / "worker.ready"
        process = FakeStandby(ready_file, **script)
        standby = StandbyWorker(process, ready_file, SETTINGS, clock=asyncio.get_running_loop().time)  # type: ignore[arg-type]
        try:
            await scenario(standby, process)
        finally:
            await standby.stop()
        return process

    return run(main())


def test_a_standby_that_cannot_load_is_restarted_with_backoff_then_given_up(tmp_path: Path) -> None:
    seen = {}

    async def scenario(standby: StandbyWorker, process: FakeStandby) -> None:
        standby.ensure()
        await asyncio.sleep(100)
        standby.ensure()  # after a crash loop: no other standby
        await asyncio.sleep(100)
        seen.update(standby.snapshot())

    process = keep(tmp_path, scenario, loads_after=None, exits_after=3)
    # restarts at once, then after 1, 2, 4 s; the fifth failure within crash_loop_window is a crash loop
    assert process.timeline == ["0 start", "3 exit 87", "3 start", "6 exit 87", "7 start", "10 exit 87",
                                "12 start", "15 exit 87", "19 start", "22 exit 87"]
    assert seen["state"] == StandbyState.FAILED.value and (seen["starts"], seen["failures"]) == (5, 5)
    assert seen["last_detail"] == f"exited with status {EXIT_LOAD_FAILED} while loading"


def test_a_loaded_standby_waits_and_is_promoted_by_take(tmp_path: Path) -> None:
    seen = []

    async def scenario(standby: StandbyWorker, process: FakeStandby) -> None:
        standby.ensure()
        await asyncio.sleep(19.9)
        seen.append((standby.state, standby.take()))
        await asyncio.sleep(0.2)
        seen.append((standby.state, standby.ready_file.exists()))
        proc = standby.take()
        seen.append((standby.state, proc, standby.ready_file.exists(), standby.promotions))
        await asyncio.sleep(100)

    process = keep(tmp_path, scenario, loads_after=20)
    assert seen[:2] == [(StandbyState.LOADING, None), (StandbyState.WAITING, True)]
    state, proc, ready_file_left, promotions = seen[2]
    assert (state, ready_file_left, promotions) == (None, False, 1)
    assert proc is not None and proc.signals == (STANDBY_GO_SIGNAL,) and proc.returncode is None
    assert process.timeline == ["0 start"]  # handed over: neither restarted nor stopped by the standby


def test_a_standby_that_does_not_load_within_start_timeout_is_killed(tmp_path: Path) -> None:
    details = []

    async def scenario(standby: StandbyWorker, process: FakeStandby) -> None:
        standby.ensure()
        await asyncio.sleep(SETTINGS.start_timeout + 1)
        details.append((standby.failures, standby.last_detail))

    process = keep(tmp_path, scenario, loads_after=None)
    assert process.timeline[:3] == ["0 start", "600 killed -9", "600 start"]  # at the first look past it
    assert details == [(1, f"not loaded within {SETTINGS.start_timeout:.0f} s: killed")]
