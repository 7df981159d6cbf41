"""Hang evidence, without a cluster: the sidecar's ``HangDetector`` on scripted samples and on real
processes (a stopped one, a busy one), the worker's ``StepClock``, and how a stall report is read.

The real-cluster proofs (a SIGSTOPped busy worker under load, the stall fault, a CPU-starved
worker left alone) are in ``tests/test_cluster.py`` and ``tests/test_sidecar.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from balancer.supervision.hang import Activity, HangDetector, ProbeAnswer, look_at, runnable_thread
from balancer.supervision.part_probe import stall_report
from bench.harness.waiting import wait_until
from tests.helpers import FakeClock
from webui.contract import FAULT_STALL_AT_STEP, STALLED_KEY
from webui.worker.faults import FaultPlan
from webui.worker.progress import StepClock

# --- the sidecar's decision, on scripted samples ---------------------------------------------


class Script:
    """Stands in for /proc: the CPU time and run state the detector sees at each look."""

    def __init__(self) -> None:
        self.cpu = 10.0
        self.runnable = False
        self.state = "sleeping"
        self.gone = False

    def look(self, pid: int, now: float) -> Activity | None:
        return None if self.gone else Activity(now, self.cpu, self.runnable, self.state)


def detector(script: Script) -> HangDetector:
    return HangDetector("n/worker", "http://w/readyz", hang_after=2.0, hang_cpu_seconds=0.05, look=script.look)


def silent_for(hang: HangDetector, script: Script, seconds: float, cpu_per_second: float = 0.0,
               start: float = 100.0, pid: int = 42) -> list[str | None]:
    """One probe out at ``start`` and never answered; ``check`` every 0.25 s; what each check said."""
    hang.probe_sent(pid, start)
    verdicts = []
    for tick in range(1, int(seconds / 0.25) + 1):
        script.cpu += cpu_per_second * 0.25
        verdicts.append(hang.check(start + tick * 0.25))
    return verdicts


def test_a_silent_process_that_uses_no_cpu_is_hung_after_hang_after() -> None:
    script = Script()
    script.state = "stopped"
    hang = detector(script)
    verdicts = silent_for(hang, script, 3.0)
    first = next(i for i, verdict in enumerate(verdicts) if verdict)
    assert (first + 1) * 0.25 == 2.0  # not before hang_after, and at once then
    assert "no answer to http://w/readyz for 2.0 s" in verdicts[first]
    assert "0.00 CPU-s used and no thread runnable (process state stopped)" in verdicts[first]


def test_a_silent_process_that_uses_cpu_is_not_hung() -> None:
    script = Script()
    hang = detector(script)
    assert not any(silent_for(hang, script, 6.0, cpu_per_second=0.2))


def test_a_cpu_starved_process_is_runnable_and_not_hung_even_with_almost_no_cpu() -> None:
    script = Script()
    script.runnable = True  # waits in the run queue: it wants a CPU and gets almost none
    hang = detector(script)
    assert not any(silent_for(hang, script, 6.0, cpu_per_second=0.001))


def test_only_the_last_hang_after_seconds_count() -> None:
    """Busy first (a job), then frozen: hung once a whole quiet window has passed."""
    script = Script()
    hang = detector(script)
    hang.probe_sent(42, 100.0)
    script.cpu += 1.0  # 1 CPU-s in the first 0.5 s of the silence
    assert hang.check(100.5) is None
    verdicts = {t: hang.check(100.0 + t) for t in (1.0, 2.0, 2.25, 2.5, 2.75)}
    assert verdicts[2.0] is None and verdicts[2.25] is None  # the busy 0.5 s are still in the window
    assert verdicts[2.5] is not None


def test_an_answer_of_any_kind_ends_the_silence_a_timeout_does_not() -> None:
    script = Script()
    hang = detector(script)
    hang.probe_sent(42, 100.0)
    hang.probe_done(ProbeAnswer(ok=False, answered=False))  # the probe timed out
    hang.probe_sent(42, 101.0)  # the next one: the silence still counts from 100.0
    assert hang.check(102.0) is not None
    hang.probe_done(ProbeAnswer(ok=False))  # 503 or refused: it answered
    hang.probe_sent(42, 103.0)
    assert hang.check(104.0) is None and hang.check(105.0) is not None


def test_a_new_process_starts_a_new_silence_and_a_gone_one_is_not_judged() -> None:
    script = Script()
    hang = detector(script)
    hang.probe_sent(42, 100.0)
    hang.probe_sent(43, 101.5)  # restarted meanwhile
    assert hang.check(102.0) is None
    script.gone = True
    assert hang.check(104.0) is None


# --- the sidecar's view of real processes ----------------------------------------------------


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_look_at_a_stopped_and_a_spinning_process(sleeper: subprocess.Popen) -> None:
    os.kill(sleeper.pid, signal.SIGSTOP)
    stopped = wait_until(lambda: (a := look_at(sleeper.pid, 0.0)) and a.state == "stopped" and a,
                         "stopped state", 5, 0.02)
    assert not stopped.runnable and not runnable_thread(sleeper.pid)
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: "
                                                      "pass"])
    try:
        time.sleep(0.5)
        seen = [look_at(spinner.pid, float(i)) for i in range(20)]
        assert any(a.runnable for a in seen) and seen[-1].cpu_seconds > 0
    finally:
        spinner.kill()
        spinner.wait(timeout=10)
    assert look_at(spinner.pid, 0.0) is None


def test_runnable_thread_reads_each_threads_state(tmp_path: Path) -> None:
    for tid, state in ((7, "S"), (8, "R")):
        (tmp_path / "7" / "task" / str(tid)).mkdir(parents=True)
        (tmp_path / "7" / "task" / str(tid) / "stat").write_text(f"{tid} (py thon) {state} 1 2 3\n")
    assert runnable_thread(7, tmp_path)
    (tmp_path / "7" / "task" / "8" / "stat").write_text("8 (a) b) D 1 2 3\n")  # a ")" in the name
    assert not runnable_thread(7, tmp_path)


# --- the worker's step clock -----------------------------------------------------------------


def test_step_clock_reports_a_stall_only_inside_the_denoising_loop() -> None:
    clock = FakeClock(0.0)
    steps = StepClock(floor=2.0, factor=10.0, clock=clock)
    with steps.timing():
        clock.now = 30.0  # before the first step (text encoding): not judged
        assert steps.stalled_for() is None and steps.stall() is None
        for step in range(1, 4):
            steps.step(step, 8)
            clock.now += 0.5
        assert steps.usual == pytest.approx(0.5)
        assert steps.limit() == 5.0  # 10 x the usual 0.5 s
        clock.now += 4.0
        assert steps.stall() is None
        clock.now += 1.0
        assert steps.stall() == "stalled: no denoising step for 5.5 s (usual step 0.50 s, limit 5.0 s)"
        steps.step(8, 8)
        clock.now += 60  # after the last step (VAE decode): not judged
        assert steps.stall() is None
    assert steps.stalled_for() is None


def test_step_clock_uses_the_floor_before_it_knows_the_usual_step() -> None:
    clock = FakeClock(0.0)
    steps = StepClock(floor=2.0, factor=10.0, clock=clock)
    with steps.timing():
        steps.step(1, 8)
        clock.now = 2.5
        assert steps.stall() == "stalled: no denoising step for 2.5 s (usual step not known yet, limit 2.0 s)"


def test_the_stall_fault_is_read_from_the_environment() -> None:
    plan = FaultPlan.from_env({FAULT_STALL_AT_STEP: "3"})
    assert plan.active and plan.stall_at_step == 3
    assert not FaultPlan.from_env({}).active


# --- the sidecar reading a worker's stall report ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, {STALLED_KEY: "stalled: no denoising step for 12.0 s"}, "stalled: no denoising step for 12.0 s"),
        (503, {STALLED_KEY: None, "reason": "warming up"}, None),
        (200, {STALLED_KEY: "stalled: x"}, None),
        (503, ["not", "a", "mapping"], None),
        (503, None, None),
    ],
)
def test_stall_report_is_read_from_a_503_readyz(status: int, body: object, expected: str | None) -> None:
    response = httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="<html>")
    assert stall_report(response) == expected
