"""``ProcessSupervisor``'s state machine, in process: a scripted ``FakeChild`` on a loop of virtual time.

Each test runs minutes of a child's life (``SidecarSpec``'s default timings: probe every 1 s, hung after
2 s frozen, stuck after 60 s, start timeout 600 s, backoff 1 s doubling, crash loop at 5 deaths) in
milliseconds, and reads back the timeline: what HAProxy was told, what was started, stopped or killed,
and when. The supervisor, its restart policy, hang detector, death classifier and metrics are the real ones.
"""

from __future__ import annotations

import asyncio

import pytest

from balancer.supervision.causes import DeathCause
from balancer.supervision.child import StartFailed
from balancer.supervision.hang import ProbeAnswer
from balancer.supervision.state import PartState
from balancer.supervision.supervisor import ProcessSupervisor
from tests.fake_child import LOADING, SETTINGS, SILENT, STALLED, FakeChild, Life, supervise, until
from webui.contract import EXIT_LOAD_FAILED, EXIT_OOM


def test_a_started_process_that_answers_is_put_in_rotation() -> None:
    child = FakeChild(Life(ready_after=2.5))
    supervisor = supervise(child, until(10))
    assert child.timeline == [
        "0 haproxy maint", "0 starting", "0 start 1001", "3 ready", "3 haproxy ready",
        "10 stopping", "10 haproxy drain", "10 stopped -15", "10 haproxy maint", "10 stopped"]
    assert supervisor.status.restarts == 0 and not supervisor.status.deaths
    assert child.closed


def test_a_process_that_exits_is_taken_out_classified_and_restarted() -> None:
    child = FakeChild(Life(exits_after=5.5, returncode=3), Life(exits_after=0.5), Life())
    supervisor = supervise(child, until(20))
    assert child.timeline[:14] == [
        "0 haproxy maint", "0 starting", "0 start 1001", "0 ready", "0 haproxy ready",
        "5.5 exit 3", "5.5 haproxy maint", "5.5 starting", "5.5 start 1002", "5.5 ready", "5.5 haproxy ready",
        "6 exit 1", "6 haproxy maint", "6 backoff"]  # the first death restarts at once, the second waits 1 s
    assert child.timeline[14:19] == ["7 starting", "7 start 1003", "7 ready", "7 haproxy ready", "20 stopping"]
    status = supervisor.status
    assert status.deaths == {DeathCause.CRASH: 2}
    assert (status.last_cause, status.last_returncode, status.restarts) == (DeathCause.CRASH, 1, 2)


@pytest.mark.parametrize(("returncode", "cause"), [
    (EXIT_OOM, DeathCause.OOM_EXIT), (EXIT_LOAD_FAILED, DeathCause.LOAD_FAILED), (0, DeathCause.EXIT),
    (-11, DeathCause.SIGNAL)])
def test_an_exit_is_classified_by_its_status(returncode: int, cause: DeathCause) -> None:
    supervisor = supervise(FakeChild(Life(exits_after=5.5, returncode=returncode), Life()), until(10))
    assert supervisor.status.deaths == {cause: 1}
    assert (supervisor.status.last_cause, supervisor.status.last_returncode) == (cause, returncode)


def test_a_frozen_process_is_killed_as_hung_within_hang_after() -> None:
    child = FakeChild(Life(fails_after=9.5), Life())
    supervisor = supervise(child, until(30))
    # its probe at 10 s gets no answer; 2 s later (hang_after) it is seen frozen and killed, and restarted at once
    assert child.timeline[5:12] == [
        "12 haproxy maint", "12 killed -9", "12 starting", "12 start 1002", "12 ready", "12 haproxy ready",
        "30 stopping"]
    assert supervisor.status.last_cause is DeathCause.HUNG
    assert "no thread runnable" in supervisor.status.last_detail


def test_a_worker_that_reports_its_loop_stalled_is_killed_as_hung() -> None:
    child = FakeChild(Life(fails_after=9.5, failing=STALLED), Life())
    supervisor = supervise(child, until(30))
    assert child.timeline[5:8] == ["10 haproxy maint", "10 killed -9", "10 starting"]
    assert supervisor.status.last_cause is DeathCause.HUNG
    assert STALLED.stalled in supervisor.status.last_detail


@pytest.mark.parametrize(("failing", "unready"), [(SILENT, "13 unready"), (LOADING, "10 unready")])
def test_a_busy_process_failing_its_probe_is_killed_as_stuck_after_stuck_after(failing: ProbeAnswer,
                                                                                unready: str) -> None:
    child = FakeChild(Life(fails_after=9.5, failing=failing, frozen=False), Life())
    supervisor = supervise(child, until(120))
    assert child.timeline[5] == unready  # the first failed answer (no answer: at the probe's timeout, 3 s)
    killed = next(i for i, line in enumerate(child.timeline) if line.endswith("killed -9"))
    seconds = float(child.timeline[killed].split()[0])
    assert 9 + SETTINGS.stuck_after < seconds <= 9 + SETTINGS.stuck_after + SETTINGS.probe_interval + \
        SETTINGS.probe_timeout  # its last good answer was at 9 s
    assert child.timeline[killed - 1].endswith("haproxy maint")
    assert supervisor.status.deaths == {DeathCause.STUCK: 1}


def test_a_process_that_never_gets_ready_is_killed_after_start_timeout() -> None:
    child = FakeChild(Life(ready_after=None), Life())
    supervisor = supervise(child, until(700))
    assert "601 killed -9" in child.timeline and "601 start 1002" in child.timeline
    assert supervisor.status.deaths == {DeathCause.STUCK: 1}
    assert "no answer from http://fake/readyz for 601 s" in supervisor.status.last_detail


def test_a_failed_first_start_is_the_callers_to_handle() -> None:
    child = FakeChild(Life(start_fails="no such file: webui"))
    with pytest.raises(StartFailed, match="no such file"):
        supervise(child, until(10))
    assert child.timeline == ["0 haproxy maint", "0 starting", "0 start failed", "0 haproxy maint", "0 stopped"]
    assert child.closed


def test_a_failed_restart_counts_as_a_death() -> None:
    child = FakeChild(Life(exits_after=5.5), Life(start_fails="port in use"), Life())
    supervisor = supervise(child, until(10))
    assert child.timeline[5:13] == [
        "5.5 exit 1", "5.5 haproxy maint", "5.5 starting", "5.5 start failed", "5.5 backoff",
        "6.5 starting", "6.5 start 1002", "6.5 ready"]
    assert supervisor.status.deaths == {DeathCause.CRASH: 2}
    assert supervisor.status.last_detail == "did not start: port in use"


@pytest.mark.parametrize("how", ["retry", "request_restart"])
def test_a_crash_loop_stays_out_of_rotation_until_a_retry_starts_afresh(how: str) -> None:
    child = FakeChild(*[Life(exits_after=0.5)] * 5, Life())
    seen: dict[str, object] = {}

    async def retry(supervisor: ProcessSupervisor, stopping: asyncio.Event) -> None:
        await asyncio.sleep(100)
        seen["status"] = (supervisor.status.state, supervisor.status.crash_looped, child.starts, child.pid)
        seen["timeline"] = list(child.timeline)
        getattr(supervisor, how)()
        await asyncio.sleep(10)

    supervisor = supervise(child, retry)
    # five quick deaths: restarted at once, then after 1, 2 and 4 s; the fifth within crash_loop_window gives up
    starts = [line.split()[0] for line in seen["timeline"] if " start " in line]
    assert starts == ["0", "0.5", "2", "4.5", "9"]
    assert seen["timeline"][-3:] == ["9.5 haproxy maint", "9.5 crash_loop", "9.5 haproxy maint"]
    assert seen["status"] == (PartState.CRASH_LOOP, True, 5, None)
    assert child.timeline[len(seen["timeline"]):][:4] == ["100 starting", "100 start 1006", "100 ready",
                                                            "100 haproxy ready"]
    assert not supervisor.status.crash_looped and supervisor.policy.recent_deaths() == 0
    assert supervisor.status.restarts == 5  # 4 after deaths, 1 retry
    assert supervisor.status.deaths == {DeathCause.CRASH: 5}


def test_a_retry_of_a_process_that_is_not_crash_looped_is_refused() -> None:
    answers = []

    async def retry(supervisor: ProcessSupervisor, stopping: asyncio.Event) -> None:
        await asyncio.sleep(5)
        answers.append(supervisor.retry())

    child = FakeChild(Life())
    supervise(child, retry)
    assert answers == [False] and child.starts == 1


def test_a_planned_restart_is_a_graceful_stop_and_a_start_at_once_not_a_death() -> None:
    async def restart(supervisor: ProcessSupervisor, stopping: asyncio.Event) -> None:
        await asyncio.sleep(5.5)
        supervisor.request_restart()
        await asyncio.sleep(5)

    child = FakeChild(Life(ready_after=1))
    supervisor = supervise(child, restart)
    assert child.timeline[5:14] == [
        "5.5 stopping", "5.5 haproxy drain", "5.5 stopped -15", "5.5 haproxy maint", "5.5 stopped",
        "5.5 haproxy maint", "5.5 starting", "5.5 start 1002", "6.5 ready"]
    assert not supervisor.status.deaths and supervisor.policy.recent_deaths() == 0
    assert supervisor.status.restarts == 1


def test_a_stop_while_the_process_starts_stops_it_at_once() -> None:
    child = FakeChild(Life(ready_after=None))
    supervise(child, until(30.5))
    assert child.timeline[-5:] == [
        "30.5 stopping", "30.5 haproxy drain", "30.5 stopped -15", "30.5 haproxy maint", "30.5 stopped"]


def test_a_stop_during_the_backoff_ends_it_at_once() -> None:
    child = FakeChild(Life(exits_after=0.5))

    async def stop_in_backoff(supervisor: ProcessSupervisor, stopping: asyncio.Event) -> None:
        await asyncio.sleep(1.5)  # the second death was at 1 s; the restart would be at 2 s
        assert supervisor.status.state is PartState.BACKOFF
        stopping.set()
        await asyncio.sleep(0)

    supervise(child, stop_in_backoff)
    assert child.timeline[-3:] == ["1 backoff", "1.5 haproxy maint", "1.5 stopped"]
    assert child.starts == 2
