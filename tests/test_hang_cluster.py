"""Hung workers replaced in seconds, end to end: ``python launch.py`` with two nodes whose workers serve the
fixed-latency stand-in (the subject is the hang rules, not the model; the faults act on its denoising steps).

- A worker SIGSTOPped while it runs a job under a small load (REST through HAProxy's public
  port, a reused gradio_client, the studio page's browser protocol): every request succeeds, the
  job in flight finishes on the other worker, the sidecar records ``hung`` with its evidence,
  far below the 60 s ``stuck_after`` fallback.
- node2's worker stalls its denoising loop (``PORTRAIT_FAULT_STALL_AT_STEP``, only for a marked
  prompt): ``hung`` with the worker's own evidence, and the job finishes on node1.
- node1's worker, running a job, is CPU-starved (its threads SCHED_IDLE behind spinning
  processes of this test, for a bounded time): it is not killed, and the frozen rule would not
  call it hung even if its probe had gone unanswered the whole time.

Every hang setting is the default (``hang_after`` 2 s, ``stuck_after`` 60 s); measured figures
go to ``test-artifacts/hang.json``, reported, not asserted.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import psutil
import pytest

from balancer.supervision.hang import HangDetector
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job, Reply
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, LoadRunner, Record, timed_call
from bench.harness.processes import REPO, Processes
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from tests.balancer_helpers import haproxy_retries
from tests.helpers import record_figures
from tests.suite_cluster import suite_options
from webui.contract import FAULT_PROMPT_MARKER, FAULT_STALL_AT_STEP, FAULT_STEP_CPU_SECONDS

NODES = ("node1", "node2")
STALL_MARKER = "[[hang-stall]]"
SLOW_MARKER = "[[hang-slow]]"
STEP_CPU_SECONDS = 0.08
"""node1's steps for prompts with ``SLOW_MARKER`` use at least this much CPU time each: the starved job's
``STARVED_STEPS`` steps last 4.8 s or more on any CPU, and far longer starved (the starvation test judges its
worker for ``hang_after`` + 2 s)."""
STARVED_STEPS = 60
ARTIFACT = REPO / "test-artifacts" / "hang.json"
JOB_SECONDS = 0.5
MODEL = f"standin:{JOB_SECONDS}"
"""Half a second a job: the load keeps both workers busy, as the demo model's 4-step jobs do."""
STUCK_AFTER = 60.0
"""The sidecar's default fallback: everything here must be far quicker."""


def job(index: int, prompt: str = "hang portrait") -> Job:
    """A quick generation (256x256, the studio page's smallest; 4 steps) with a seed of its own."""
    return Job(prompt=f"{prompt} {index}", steps=4, width=256, height=256, seed=5000 + index)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("hang")
    options = suite_options(
        model=MODEL, nodes=len(NODES), threads=1, start_timeout=240,
        worker_args=["--stall-floor", "2"],
        node_worker_env={"node1": {FAULT_STEP_CPU_SECONDS: str(STEP_CPU_SECONDS), FAULT_PROMPT_MARKER: SLOW_MARKER},
                         "node2": {FAULT_STALL_AT_STEP: "2", FAULT_PROMPT_MARKER: STALL_MARKER}},
        sidecar={"probe_interval": 0.5, "start_timeout": 180, "backoff_initial": 0.5, "stop_grace": 5},
    )
    with Processes("hang") as processes:
        launched = LaunchedCluster(options, name="hang", processes=processes, run_dir=run_dir)
        launched.start()
        launched.wait_all_ready(timeout=240)
        yield launched


def load_clients(cluster: LaunchedCluster, clock: Clock, closers: list[Callable[[], None]]) -> list[LoadClient]:
    """Two REST clients, a reused gradio_client and a browser tab, each with jobs of its own."""
    clients = []
    kinds = [("rest", RestClient), ("rest", RestClient), ("gradio_client", GradioApiClient),
             ("browser", BrowserProtocolClient)]
    for index, (kind, make) in enumerate(kinds):
        client = make(cluster.public_url)
        closers.append(client.close)
        name = f"{kind}-{index}"

        def call(i: int, name: str = name, kind: str = kind, client=client, index: int = index) -> Record:
            return timed_call(clock, name, kind, True, lambda: client.generate(job(100 * index + i)))

        clients.append(LoadClient(name, call, max_requests=100))
    return clients


def test_a_sigstopped_busy_worker_under_load_is_replaced_and_no_request_fails(cluster: LaunchedCluster) -> None:
    clock, load_started_wall = Clock(), time.time()
    closers: list[Callable[[], None]] = []
    clients = load_clients(cluster, clock, closers)
    runner = LoadRunner(clients, duration=150)
    load = threading.Thread(target=runner.run)
    load.start()
    try:
        wait_until(lambda: all(client.records for client in clients), "every client served once", 90)
        worker_ids = cluster.part_ids("worker")
        victim = cluster.busy_workers(timeout=20)[0]
        restarts = cluster.part_status(victim, "worker")["restarts"]
        pid = cluster.pid(victim, "worker")
        stopped_at = clock.now()
        os.kill(pid, signal.SIGSTOP)
        try:
            entry = wait_until(lambda: (e := cluster.part_status(victim, "worker"))["pid"] != pid and e,
                               f"{victim}/worker replaced", STUCK_AFTER)
            replaced_at = clock.now()
        finally:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
        cluster.wait_restarted(victim, "worker", restarts + 1, timeout=120)
        ready_at = clock.now()
        served = len([r for c in clients for r in c.records])
        wait_until(lambda: len([r for c in clients for r in c.records]) >= served + 4, "more requests", 60)
    finally:
        runner.stop.set()
        load.join(timeout=120)
        for close in closers:
            close()
    records = [record for client in clients for record in client.records]
    failed = [record for record in records if record.outcome != OK]
    assert not failed, f"{len(failed)} of {len(records)} requests failed: {failed[:3]}"
    assert entry["last_cause"] == "hung", entry["last_detail"]
    assert "no answer to" in entry["last_detail"] and "process state stopped" in entry["last_detail"]
    assert replaced_at - stopped_at < STUCK_AFTER / 4
    # The jobs in flight when the worker froze (its own among them) finished on the other worker. A response
    # the frozen worker had already written can still reach its client after the stop (the kernel sends it, and
    # a client starved of CPU reads it late): such a job must have begun a whole job's fixed latency before the
    # stop, so that the worker could have finished it before it froze.
    survivor = worker_ids[next(node for node in NODES if node != victim)]
    spanning = [r for r in records if r.start <= stopped_at and r.end > stopped_at]
    assert any(r.worker_id == survivor for r in spanning), spanning
    # A job replayed (attempts > 1) after the replacement may also land on the victim's new, ready process.
    replayed = [r for r in spanning if r.attempts > 1 and r.end > replaced_at]
    answered_before = [r for r in spanning if r.worker_id != survivor and r not in replayed]
    assert all(r.worker_id == worker_ids[victim] and r.start <= stopped_at - JOB_SECONDS for r in answered_before), (
        stopped_at, answered_before)
    # HAProxy logs a request under the time it arrived, before the stop for the one in flight.
    replayed = haproxy_retries(cluster.spec.run_dir / "haproxy.log", since=load_started_wall) + sum(
        r.attempts > 1 for r in records)
    assert replayed >= 1
    before = sorted(r.latency for r in records if r.end < stopped_at)
    record_figures(ARTIFACT, "sigstop_busy_worker_under_load", {
        "stopped": f"{victim}/worker",
        "requests": len(records),
        "failed": len(failed),
        "replayed": replayed,
        "stop_to_killed_and_replaced_s": round(replaced_at - stopped_at, 2),
        "stop_to_back_ready_s": round(ready_at - stopped_at, 2),
        "in_flight_latency_max_s": round(max(r.latency for r in spanning), 2),
        "median_latency_before_s": round(before[len(before) // 2], 2),
        "detail": entry["last_detail"],
        "load_average": os.getloadavg(),
    })


def test_a_stalled_denoising_loop_is_replaced_with_the_workers_evidence(cluster: LaunchedCluster) -> None:
    cluster.wait_all_ready()
    hung_before = cluster.part_status("node2", "worker")["deaths"].get("hung", 0)
    result: list[Reply | Exception] = []
    took: list[float] = []

    def send() -> None:
        started = time.monotonic()
        try:
            result.append(RestClient(cluster.public_url).generate(job(1, f"{STALL_MARKER} portrait")))
        except Exception as exc:  # handed to the assertions
            result.append(exc)
        took.append(time.monotonic() - started)

    sender = threading.Thread(target=send)
    with cluster.only_workers(["node2"]):  # the marked job must land on node2, the worker with the fault
        sender.start()
        assert cluster.busy_workers(timeout=30) == ["node2"]
    # Recorded at the kill; its restart goes on while the next test uses node1 only.
    entry = wait_until(lambda: (e := cluster.part_status("node2", "worker"))["deaths"].get("hung", 0) > hung_before
                       and e, "node2/worker killed as hung", STUCK_AFTER)
    sender.join(timeout=120)
    assert entry["last_cause"] == "hung", entry["last_detail"]
    assert "the worker reports stalled: no denoising step for" in entry["last_detail"]
    assert len(result) == 1 and isinstance(result[0], Reply), result
    assert result[0].worker_id == cluster.part_ids("worker")["node1"]
    assert took[0] < STUCK_AFTER / 4
    record_figures(ARTIFACT, "stalled_denoising_loop", {
        "job_latency_s": round(took[0], 2), "detail": entry["last_detail"],
        "load_average": os.getloadavg(),
    })


STARVE_SECONDS = 6.0
"""How long the spinners run: the judged window (``hang_after`` + 2 s at least) with room to spare."""
SPINNER = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def starve(pid: int) -> int:
    """Put every thread of ``pid`` in SCHED_IDLE (it runs only when nothing else wants the CPU); how many."""
    threads = psutil.Process(pid).threads()
    for thread in threads:
        os.sched_setscheduler(thread.id, os.SCHED_IDLE, os.sched_param(0))
    return len(threads)


def test_a_cpu_starved_worker_is_not_killed(cluster: LaunchedCluster, processes: Processes) -> None:
    """node1's worker runs a long job while its threads are SCHED_IDLE behind two spinning processes per
    core: it gets almost no CPU. The sidecar must not kill it, and the frozen rule, fed the real process
    as if its probe had no answer the whole time, must never call it hung (it is runnable)."""
    before = cluster.wait_restarted("node1", "worker", 0)  # ready (node2 may still be restarting)
    result: list[Reply | Exception] = []

    def send() -> None:
        try:
            starved = Job(f"starved portrait {SLOW_MARKER}", STARVED_STEPS, 256, 256, 77)
            result.append(RestClient(cluster.public_url).generate(starved))
        except Exception as exc:  # handed to the assertions
            result.append(exc)

    sender = threading.Thread(target=send)
    spec = cluster.spec.sidecar
    hang = HangDetector("node1/worker", "(no answer, assumed)", spec.hang_after, spec.hang_cpu_seconds)
    verdicts: list[str | None] = []
    with cluster.only_workers(["node1"]):
        sender.start()
        assert cluster.busy_workers(timeout=30) == ["node1"]
        threads = starve(before["pid"])
        spinners = [processes.start([sys.executable, "-c", SPINNER.format(seconds=STARVE_SECONDS)],
                                    log_name=f"spinner{i}") for i in range(2 * (os.cpu_count() or 2))]
        silent_since = time.monotonic()
        hang.probe_sent(before["pid"], silent_since)
        # Bounded by the spinners (STARVE_SECONDS); judged only while the job runs (an idle worker answers).
        while sender.is_alive() and any(spinner.poll() is None for spinner in spinners):
            time.sleep(spec.hang_check_interval)
            judged_until = time.monotonic()
            verdicts.append(hang.check(judged_until))
        sender.join(timeout=180)
    after = cluster.part_status("node1", "worker")
    assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"], after
    assert len(result) == 1 and isinstance(result[0], Reply), result
    assert verdicts and judged_until - silent_since >= spec.hang_after + 2  # windows were judged, not just begun
    assert not any(verdicts), next(v for v in verdicts if v)
    sidecar_log = cluster.proc.log_path.read_text()
    record_figures(ARTIFACT, "cpu_starved_worker", {
        "starved_s": STARVE_SECONDS, "threads_made_idle": threads, "spinners": len(spinners),
        "hang_checks": len(verdicts), "judged_s": round(judged_until - silent_since, 2),
        "sidecar_not_hung_notes": [line for line in sidecar_log.splitlines() if "node1/worker: no answer" in line],
        "load_average": os.getloadavg(),
    })
