"""The whole cluster, end to end: ``python launch.py`` with real HAProxy, sidecar, workers and web fronts.

One cluster (two nodes serving the fixed-latency stand-in, the subject being the cluster and not the
pixels, plus a worker whose model does not exist, so it crash-loops) is shared by the tests of this
module, in order: stickiness, the workers' queue, a worker
SIGKILLed under load, OOM deaths, a web front SIGKILLed under a reused gradio_client, the
crash loop. Each test leaves the cluster whole again. Measured figures (time to DOWN, back in
rotation, failed requests) go to ``test-artifacts/cluster-failover.json``; they are reported,
not asserted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from gradio_client import Client
from pydantic_settings import CliApp

from balancer.config.settings import LaunchSettings
from balancer.haproxy.config import WEBS_BACKEND
from balancer.haproxy.process import status_is_out, status_is_up
from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import FAILED, OK, Clock, LoadClient, LoadRunner, Poller, Record, timed_call
from bench.harness.processes import REPO, Processes
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from launch import open_share
from tests.balancer_helpers import haproxy_retries, run_concurrently, send_in_order
from tests.helpers import blank_png, record_figures
from tests.suite_cluster import suite_options
from webui.contract import EXIT_OOM, FAULT_OOM_AT_STEP, FAULT_PROMPT_MARKER, FAULT_STEP_CPU_SECONDS, MINIMAL_RESULT
from webui.share import ShareTunnel

OOM_MARKER = "[[cluster-oom]]"
NODES = ("node1", "node2")
ARTIFACT = REPO / "test-artifacts" / "cluster-failover.json"


QUEUE_TIMEOUT = 3
"""Seconds a job may wait in HAProxy's queue: far more than a queue of four 0.1 s jobs takes."""
SLOW_MARKER = "[[cluster-slow]]"
STEP_CPU_SECONDS = 0.1
"""node2's worker spends at least this much CPU time on each step of a prompt with ``SLOW_MARKER`` (a fault)."""


def small_job(index: int, prompt: str = "studio portrait") -> Job:
    """A quick generation (128x128, 2 steps) with a seed of its own."""
    return Job(prompt=f"{prompt} {index}", steps=2, width=128, height=128, seed=1000 + index)


def oom_counter(run_dir: Path) -> Path:
    """The stand-in cgroup OOM counter file the sidecar reads (a test bumps it to fake the OOM killer)."""
    return run_dir / "memory.events"


def cluster_options(run_dir: Path) -> ClusterOptions:
    """node1 and node2 (stand-in; node1 with OOM fault injection, one OOM exit is enough to restart; node2 with slow
    prompts) plus "broken"."""
    return suite_options(
        model="standin:0.1", nodes=len(NODES), threads=1, start_timeout=120,
        worker_args=["--max-consecutive-ooms", "1"],
        node_worker_env={"node1": {FAULT_OOM_AT_STEP: "2", FAULT_PROMPT_MARKER: OOM_MARKER},
                         "node2": {FAULT_STEP_CPU_SECONDS: str(STEP_CPU_SECONDS), FAULT_PROMPT_MARKER: SLOW_MARKER}},
        # node2's worker dies up to 3 times here (a REST job's replay, a SIGKILL under load, the OOM killer): a 4th
        # death within the window makes a crash loop.
        sidecar={"probe_interval": 0.5, "start_timeout": 180, "backoff_initial": 0.5, "crash_loop_deaths": 4,
                 "crash_loop_window": 600, "stop_grace": 5, "oom_counter_file": str(oom_counter(run_dir))},
        extra={"limits": {"queue_timeout": QUEUE_TIMEOUT}},
        # A worker whose model does not exist: exits with EXIT_LOAD_FAILED every time.
        worker_only_nodes={"broken": ["--model", str(run_dir / "no-such-model"), "--threads", "1"]},
    )


class StateMonitor(Poller):
    """Notes when HAProxy first reports a server out of and back in rotation (polls every 20 ms)."""

    def __init__(self, cluster: LaunchedCluster, node: str, part: str) -> None:
        super().__init__(0.02, "state-monitor")
        self.cluster, self.node, self.part = cluster, node, part
        self.down_at: float | None = None
        self.up_again_at: float | None = None

    def poll(self) -> None:
        if self.up_again_at is not None:
            return
        status = self.cluster.server_status(self.node, self.part)
        now = time.monotonic()
        if self.down_at is None and status_is_out(status):
            self.down_at = now
        elif self.down_at is not None and status_is_up(status):
            self.up_again_at = now


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("cluster")
    oom_counter(run_dir).write_text("oom 0\noom_kill 0\n")
    with Processes("cluster") as processes:
        launched = LaunchedCluster(cluster_options(run_dir), name="cluster", processes=processes, run_dir=run_dir)
        launched.start()
        launched.wait_all_ready(timeout=120)
        yield launched
        # Ctrl-C path: SIGTERM to launch.py stops everything it started.
        children = psutil.Process(launched.proc.pid).children(recursive=True)
        launched.proc.send_signal(signal.SIGTERM)
        assert launched.proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running after launch.py stopped: {alive}"


@pytest.fixture(scope="module")
def sticky(cluster: LaunchedCluster):
    """One gradio_client.Client, reused across tests like a long-lived script would."""
    client = GradioApiClient(cluster.public_url)
    yield client
    client.close()


# --- stickiness -----------------------------------------------------------------------------


def test_a_reused_gradio_client_stays_on_one_web_front(cluster: LaunchedCluster, sticky: GradioApiClient) -> None:
    replies = [sticky.generate(small_job(i)) for i in range(8)]  # HAProxy balances by load: unstuck, 8 would spread
    assert len({reply.web_node for reply in replies}) == 1
    assert {reply.worker_id for reply in replies} <= set(NODES)


def web_fronts_serving(cluster: LaunchedCluster, requests: Callable[[], object]) -> set[str]:
    """The web fronts HAProxy sent ``requests`` to (its per-server session counters; public probes
    are answered by HAProxy itself and name no node)."""
    def sessions() -> dict[str, int]:
        return {s.server: s.total_sessions for s in cluster.servers() if s.backend == WEBS_BACKEND}

    before = sessions()
    requests()
    return {server for server, total in sessions().items() if total > before.get(server, 0)}


MAX_NEW_CLIENTS = 12
"""New clients sent, at most, until every web front has had one."""


def test_a_browser_keeps_its_web_front_and_clients_spread(cluster: LaunchedCluster) -> None:
    """Each browser stays on its web front; new browsers and new gradio_client users reach every front.

    New clients are spread by HAProxy's balancing, which ramps a server's weight up over ``slowstart`` after it
    came into rotation: right after start one front may take several new clients in a row. So new clients come
    until every front has had one (bounded), and each must stay where it landed."""
    fronts: set[str] = set()
    for _ in range(MAX_NEW_CLIENTS):
        with httpx.Client(base_url=cluster.public_url, timeout=30) as browser:
            assert browser.get("/").status_code == 200  # the studio page sets the node cookie
            nodes = web_fronts_serving(cluster, lambda: [browser.get("/config") for _ in range(20)])
            assert nodes == {browser.cookies["PORTRAIT_NODE"]}
            fronts |= nodes
        if fronts == set(NODES):
            break
    assert fronts == set(NODES)
    web_nodes: set[str] = set()
    for index in range(MAX_NEW_CLIENTS):
        client = Client(cluster.public_url, verbose=False)
        try:
            _, info = client.predict(f"spread {index}", "", 2, None, 128, 128, 7, 1.0, 1, api_name="/generate")
            web_nodes.add(info["web_node"])
        finally:
            client.close()
        if web_nodes == set(NODES):
            break
    assert web_nodes == set(NODES)


# --- the workers' queue ---------------------------------------------------------------------


@pytest.fixture
def one_worker(cluster: LaunchedCluster):
    """Only node2's worker takes jobs (node1's in maint) while the test runs."""
    cluster.runtime.set_server_state("workers", "node1", "maint")
    try:
        yield
    finally:
        cluster.runtime.set_server_state("workers", "node1", "ready")
        cluster.wait_all_ready()


def test_prefer_return_minimal_passes_the_public_port(cluster: LaunchedCluster) -> None:
    """A REST client's ``Prefer: return=minimal`` reaches the worker through HAProxy, and its answer comes back."""
    job = small_job(50).rest_body()
    with httpx.Client(base_url=cluster.public_url, timeout=120) as rest:
        minimal = rest.post("/generate", json=job, headers={"Prefer": MINIMAL_RESULT})
        full = rest.post("/generate", json=job)
    assert minimal.status_code == full.status_code == 200
    assert minimal.headers["preference-applied"] == MINIMAL_RESULT and "image" not in minimal.json()
    assert minimal.json()["images"] == full.json()["images"] == [full.json()["image"]]


def test_more_jobs_than_workers_all_complete_in_order(cluster: LaunchedCluster, one_worker: None) -> None:
    rest = httpx.Client(base_url=cluster.public_url, timeout=120)
    jobs = [small_job(i).rest_body() for i in range(4)]
    calls = [lambda job=job: rest.post("/generate", json=job) for job in jobs]
    results = send_in_order(cluster.runtime, "workers", calls)
    rest.close()
    assert [response.status_code for _, response in results] == [200] * 4
    assert [response.json()["seed"] for _, response in results] == [job["seed"] for job in jobs]
    # One worker, one job at a time: HAProxy's queue hands them over in the order they came.
    ends = [end for end, _ in results]
    assert ends == sorted(ends)


def test_beyond_the_bounded_wait_a_clear_503(cluster: LaunchedCluster, one_worker: None) -> None:
    """A job waiting behind a longer one succeeds if it waited less than the queue timeout, else gets 503.

    The running job is a slow prompt whose steps take at least ``STEP_CPU_SECONDS`` of CPU time each: it outlasts
    the timeout on any CPU, so the test does not depend on how fast this machine is today.
    """
    steps = int(1.5 * QUEUE_TIMEOUT / STEP_CPU_SECONDS)
    long_job = {"prompt": f"long {SLOW_MARKER}", "steps": steps, "width": 128, "height": 128}
    with httpx.Client(base_url=cluster.public_url, timeout=300) as rest:
        (_, running), (_, waiting) = run_concurrently(
            [lambda: rest.post("/generate", json=long_job),
             lambda: rest.post("/generate", json=small_job(0).rest_body())],
            spacing=0.5,
        )
        # Behind a short one, a job waits less than the timeout and runs.
        (_, short), (_, behind) = run_concurrently(
            [lambda: rest.post("/generate", json=small_job(1).rest_body()),
             lambda: rest.post("/generate", json=small_job(2).rest_body())], spacing=0.05)
    assert running.status_code == 200 and running.json()["timings"]["total_ms"] / 1000 >= QUEUE_TIMEOUT
    assert waiting.status_code == 503
    assert waiting.json()["error"] == "busy" and f"within {QUEUE_TIMEOUT} s" in waiting.json()["detail"]
    assert waiting.headers["retry-after"] == "10"
    assert short.status_code == behind.status_code == 200


# --- REST generations are jobs -----------------------------------------------------------------


def public_job(cluster: LaunchedCluster, job_id: str, done: Callable[[dict], bool] = lambda job: True) -> dict:
    """The job ``job_id`` as the public jobs API shows it, once ``done`` says so."""
    def read() -> dict | None:
        job = httpx.get(f"{cluster.public_url}/v1/jobs/{job_id}", timeout=10).json()
        return job if done(job) else None
    return wait_until(read, f"job {job_id}", 60)


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "canceled")


def newest_running(cluster: LaunchedCluster) -> str | None:
    """The newest anonymous job's id once its worker reported its second step."""
    listing = httpx.get(f"{cluster.public_url}/v1/jobs?limit=1", timeout=10).json()["jobs"]
    return next((job["id"] for job in listing
                 if job["status"] == "processing" and (job["progress"] or {}).get("step", 0) >= 2), None)


def image_sha256(answer: dict) -> str:
    return hashlib.sha256(base64.b64decode(answer["images"][0])).hexdigest()


def test_a_rest_generation_is_a_job_its_worker_records(cluster: LaunchedCluster, tmp_path: Path) -> None:
    """``POST /generate`` and the stream go straight to a worker, which records each as a job (``X-Job-Id``):
    its seed (drawn when the client gave none), its result's bytes, its worker, a retouch's photo."""
    with httpx.Client(base_url=cluster.public_url, timeout=120) as rest:
        answer = rest.post("/generate", json={**small_job(60).rest_body(), "seed": None})
        stream = rest.post("/generate/stream", json=small_job(61).rest_body())
    assert answer.status_code == stream.status_code == 200, answer.text
    job = public_job(cluster, answer.headers["x-job-id"], finished)
    result = answer.json()
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert job["input"]["seed"] == result["seed"] and job["results"][0]["sha256"] == image_sha256(result)
    assert job["generation"]["worker_id"] == result["worker_id"]
    streamed = json.loads(stream.text.splitlines()[-1])["result"]
    job = public_job(cluster, stream.headers["x-job-id"], finished)
    assert job["status"] == "succeeded" and job["results"][0]["sha256"] == image_sha256(streamed), job
    png = blank_png(tmp_path / "photo.png", 96, 64).read_bytes()
    photo = base64.b64encode(png).decode()  # a retouch keeps its photo, for "Make this image again"
    with httpx.Client(base_url=cluster.public_url, timeout=120) as rest:
        retouched = rest.post("/generate", json={**small_job(63).rest_body(), "init_image": photo, "strength": 0.5})
    assert retouched.status_code == 200, retouched.text
    job = public_job(cluster, retouched.headers["x-job-id"], finished)
    assert job["input"]["init_image"] == f"/v1/jobs/{job['id']}/input", job["input"]
    assert httpx.get(f"{cluster.public_url}/v1/jobs/{job['id']}/input", timeout=30).content == png
    # A cluster part's generation through the worker queue is its caller's job already: its worker records none.
    queue = httpx.post(f"{cluster.spec.worker_queue_url}/generate", json=small_job(62).rest_body(), timeout=120,
                       headers={**cluster.internal_headers, "X-Portrait-Record-Job": "1"})
    assert queue.status_code == 200 and "x-job-id" not in queue.headers


def test_a_rest_job_whose_worker_dies_is_the_same_job_on_the_next(cluster: LaunchedCluster) -> None:
    """The balancer replays the request of a killed worker on the other one with the same request id: the same
    job (attempt 2), the same seed, its result recorded once; the client gets it with the job's id."""
    slow = {"prompt": f"replayed {SLOW_MARKER}", "steps": 60, "width": 128, "height": 128}
    cluster.runtime.set_server_state("workers", "node1", "maint")  # the slow job goes to node2
    restarts = cluster.part_status("node2", "worker")["restarts"]
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, f"{cluster.public_url}/generate", json=slow, timeout=120)
            job_id = wait_until(lambda: newest_running(cluster), "the slow job running on node2", 60)
            cluster.runtime.set_server_state("workers", "node1", "ready")
            cluster.kill("node2", "worker")
            replayed = answer.result()
    finally:
        cluster.runtime.set_server_state("workers", "node1", "ready")
        cluster.wait_restarted("node2", "worker", restarts + 1)
        cluster.wait_all_ready()
    assert replayed.status_code == 200 and replayed.headers["x-job-id"] == job_id, replayed.text
    assert replayed.json()["worker_id"] == "node1"
    job = public_job(cluster, job_id, finished)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["input"]["seed"] == replayed.json()["seed"]
    assert job["results"][0]["sha256"] == image_sha256(replayed.json())


def test_a_cancel_through_the_jobs_api_stops_a_rest_generation(cluster: LaunchedCluster, one_worker: None) -> None:
    slow = {"prompt": f"canceled {SLOW_MARKER}", "steps": 100, "width": 128, "height": 128}
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, f"{cluster.public_url}/generate", json=slow, timeout=120)
        job_id = wait_until(lambda: newest_running(cluster), "the slow job running", 60)
        asked = time.monotonic()
        assert httpx.post(f"{cluster.public_url}/v1/jobs/{job_id}/cancel", timeout=10).status_code == 200
        stopped = answer.result()
    assert time.monotonic() - asked < 5, "the generation went on after its cancel"  # 100 steps: 10 s or more
    assert stopped.status_code == 409 and stopped.json()["error"] == "canceled", stopped.text
    assert stopped.headers["x-job-id"] == job_id
    assert public_job(cluster, job_id, finished)["status"] == "canceled"


def test_a_rest_stream_whose_client_leaves_ends_its_job_canceled(cluster: LaunchedCluster, one_worker: None) -> None:
    slow = {"prompt": f"left {SLOW_MARKER}", "steps": 100, "width": 128, "height": 128}
    with httpx.stream("POST", f"{cluster.public_url}/generate/stream", json=slow, timeout=60) as stream:
        job_id = stream.headers["x-job-id"]
        next(line for line in stream.iter_lines() if '"step":2' in line)
    job = public_job(cluster, job_id, finished)  # the worker stopped it: its hold is not kept on
    assert job["status"] == "canceled", job


# --- failover -------------------------------------------------------------------------------


def rest_load_client(name: str, url: str, clock: Clock) -> LoadClient:
    client = RestClient(url, timeout=120)
    return LoadClient(name, lambda i: timed_call(clock, name, "rest", True, lambda: client.generate(small_job(i))))


def test_worker_sigkill_under_load_loses_no_job(cluster: LaunchedCluster, sticky: GradioApiClient) -> None:
    clock = Clock()
    clients = [rest_load_client(f"rest{i}", cluster.public_url, clock) for i in range(2)]
    clients.append(LoadClient("gradio", lambda i: timed_call(
        clock, "gradio", "gradio_client", True, lambda: sticky.generate(small_job(100 + i)))))
    runner = LoadRunner(clients, duration=150)
    load = threading.Thread(target=runner.run)
    load.start()
    try:
        wait_until(lambda: all(client.records for client in clients), "every client served once", 60)
        victim = cluster.busy_workers(timeout=20)[0]
        restarts = cluster.part_status(victim, "worker")["restarts"]
        with StateMonitor(cluster, victim, "worker") as monitor:
            killed_at, killed_at_wall = time.monotonic(), time.time()
            cluster.kill(victim, "worker")
            entry = cluster.wait_restarted(victim, "worker", restarts + 1)
            wait_until(lambda: monitor.up_again_at, f"workers/{victim} UP again", 60)
        # A few more rounds with both workers, then stop the load.
        served_after = len([r for c in clients for r in c.records])
        wait_until(lambda: len([r for c in clients for r in c.records]) >= served_after + 6, "more requests", 60)
    finally:
        runner.stop.set()
        load.join(timeout=120)
    records: list[Record] = [record for client in clients for record in client.records]
    failed = [record for record in records if record.outcome != OK]
    assert not failed, f"{len(failed)} of {len(records)} requests failed: {failed[:3]}"
    assert entry["last_cause"] == "signal" and "SIGKILL" in entry["last_detail"]
    # Back in rotation: two jobs at once occupy both workers (one job per worker), so it serves one.
    pair = run_concurrently(
        [lambda i=i: RestClient(cluster.public_url).generate(small_job(900 + i)) for i in range(2)], 0
    )
    assert {reply.worker_id for _, reply in pair} == set(NODES)
    record_figures(ARTIFACT, "worker_sigkill_under_load", {
        "killed": f"{victim}/worker",
        "requests": len(records),
        "failed": len(failed),
        "clients": [client.name for client in clients],
        "kill_to_haproxy_out_of_rotation_s": round(monitor.down_at - killed_at, 3),
        "kill_to_back_in_rotation_s": round(monitor.up_again_at - killed_at, 3),
        "retried_by_the_web_front": sum(record.attempts > 1 for record in records),
        "replayed_by_haproxy": haproxy_retries(cluster.spec.run_dir / "haproxy.log", since=killed_at_wall),
    })


def test_oom_deaths_are_restarted_with_their_cause(cluster: LaunchedCluster) -> None:
    before = {node: cluster.part_status(node, "worker") for node in NODES}
    # node1: the worker's own OOM handling (fault injection: OOM at step 2, exit EXIT_OOM).
    oom = httpx.post(f"{before['node1']['url']}/generate", json={"prompt": f"portrait {OOM_MARKER}", "steps": 4,
                                                                   "width": 128, "height": 128}, timeout=60,
                     headers=cluster.internal_headers)
    assert oom.status_code == 507 and oom.json()["error"] == "out_of_memory"
    # node2: what the kernel's OOM killer does: bump the cgroup's oom_kill counter, SIGKILL.
    oom_counter(cluster.run_dir).write_text("oom 1\noom_kill 1\n")
    cluster.kill("node2", "worker")
    node1 = cluster.wait_restarted("node1", "worker", before["node1"]["restarts"] + 1)
    node2 = cluster.wait_restarted("node2", "worker", before["node2"]["restarts"] + 1)
    assert node1["last_cause"] == "oom_exit" and node1["last_returncode"] == EXIT_OOM
    assert node2["last_cause"] == "oom_killer" and "oom_kill 0 -> 1" in node2["last_detail"]
    metrics = httpx.get(f"{cluster.spec.sidecar.url}/metrics").text
    assert 'portrait_sidecar_deaths_total{cause="oom_exit",node="node1",part="worker"} 1.0' in metrics
    assert 'portrait_sidecar_deaths_total{cause="oom_killer",node="node2",part="worker"} 1.0' in metrics
    cluster.wait_all_ready()
    assert RestClient(cluster.public_url).generate(small_job(7)).worker_id in NODES


def test_web_front_sigkill_keeps_a_reused_gradio_client_working(cluster: LaunchedCluster,
                                                                 sticky: GradioApiClient) -> None:
    front = sticky.generate(small_job(200)).web_node
    restarts = cluster.part_status(front, "web")["restarts"]
    clock = Clock()
    runner = LoadRunner([rest_load_client("rest", cluster.public_url, clock)], duration=120)
    load = threading.Thread(target=runner.run)
    load.start()
    try:
        cluster.kill(front, "web")
        replies = [sticky.generate(small_job(300 + i)) for i in range(5)]  # the same Client, stale cookie
        entry = cluster.wait_restarted(front, "web", restarts + 1)
    finally:
        runner.stop.set()
        load.join(timeout=120)
    records = runner.clients[0].records
    assert records and all(record.outcome == OK for record in records), [r for r in records if r.outcome == FAILED]
    assert [reply.seed for reply in replies] == [small_job(300 + i).seed for i in range(5)]
    assert entry["last_cause"] == "signal"
    cluster.wait_all_ready()
    assert sticky.generate(small_job(400)).seed == 1400


def test_crash_loop_leaves_the_node_in_maint_and_others_serve(cluster: LaunchedCluster) -> None:
    def crash_looped() -> dict | None:
        entry = cluster.part_status("broken", "worker")
        return entry if entry["crash_looped"] else None

    entry = wait_until(crash_looped, "broken/worker crash-looped", 120, interval=0.5)
    assert entry["state"] == "crash_loop" and entry["deaths"] == {"load_failed": 4}
    assert cluster.status()["crash_looped"] == ["broken/worker"]
    assert cluster.server_status("broken", "worker") == "MAINT"
    assert "broken/worker: CRASH LOOP" in cluster.proc.log_path.read_text()
    replies = [RestClient(cluster.public_url).generate(small_job(500 + i)) for i in range(3)]
    assert {reply.worker_id for reply in replies} <= set(NODES)


def test_haproxy_is_restarted_with_the_sidecars_server_states(cluster: LaunchedCluster) -> None:
    old = next(p for p in psutil.Process(cluster.proc.pid).children() if p.name() == "haproxy")
    old.kill()
    # Back, with the sidecar's states told again: node1 and node2 in rotation, the crash-looped one out.
    def back_in_step() -> bool:
        return cluster.runtime.ping() and cluster.all_ready() and cluster.server_status("broken", "worker") == "MAINT"

    wait_until(back_in_step, "HAProxy back, node1 and node2 UP, broken in MAINT", 60, interval=0.1)
    new = next(p for p in psutil.Process(cluster.proc.pid).children() if p.name() == "haproxy")
    assert new.pid != old.pid
    assert RestClient(cluster.public_url).generate(small_job(600)).worker_id in NODES
    # Restarted by the sidecar, as one more supervised part, and reported in its /status.
    assert "balancer/haproxy: died (signal): killed by SIGKILL" in cluster.proc.log_path.read_text()
    entry = cluster.status()["haproxy"]
    assert (entry["pid"], entry["restarts"], entry["state"]) == (new.pid, 1, "ready")


def test_share_link_is_requested_for_the_balancer_port(cluster: LaunchedCluster, monkeypatch) -> None:
    requested = {}

    def fake_setup_tunnel(**kwargs: object) -> str:  # the network part: Gradio's share server
        requested.update(kwargs)
        return "http://abcdef.gradio.live"

    monkeypatch.setattr("gradio.networking.setup_tunnel", fake_setup_tunnel)
    tunnel = open_share(cluster.spec)
    assert isinstance(tunnel, ShareTunnel) and tunnel.url == "https://abcdef.gradio.live"
    assert (requested["local_host"], requested["local_port"]) == ("127.0.0.1", cluster.spec.public.port)
    tunnel.close()


# --- launch.py's flags (no cluster needed) --------------------------------------------------


def launch_settings(*flags: str) -> LaunchSettings:
    return CliApp.run(LaunchSettings, cli_args=list(flags))


def test_launch_defaults_two_local_demo_nodes_safe_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("balancer.config.settings.list_gpus", list)  # a machine without GPUs (tests/test_gpus.py: with)
    spec = launch_settings("--threads", "1").cluster_spec()
    assert [node.name for node in spec.nodes] == ["node1", "node2"]
    assert all(node.managed and node.worker.args[:2] == ["--model", "demo"] for node in spec.nodes)
    assert {spec.public.host, spec.stats.host, spec.sidecar.host, spec.worker_queue.host} == {"127.0.0.1"}
    assert spec.stats.password.get_secret_value() and spec.users_file is None
    assert spec.limits.rate_limit_per_minute is None
    assert launch_settings().local_thread_count(2) == max(1, (os.cpu_count() or 1) // 2)


def test_launch_flags_override_the_cluster_file(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump({
        "public": {"port": 9100}, "stats": {"port": 9101},
        "nodes": [{"name": "gpu1", "managed": False, "worker": {"host": "10.0.0.21", "port": 7960}}],
    }))
    spec = launch_settings("--cluster", str(cluster_file), "--port", "9200").cluster_spec()
    assert (spec.public.port, spec.stats.port) == (9200, 9101)  # flag wins; the file's value stays otherwise
    assert [node.name for node in spec.nodes] == ["gpu1"]  # a file with nodes: no local nodes unless asked
    spec = launch_settings("--cluster", str(cluster_file), "--nodes", "1").cluster_spec()
    assert [(node.name, node.managed) for node in spec.nodes] == [("gpu1", False), ("local1", True)]


def test_launch_reports_a_bad_cluster_file_in_one_line(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump({"limits": {"queue_timeout": -1}}))
    result = subprocess.run([sys.executable, "launch.py", "--cluster", str(cluster_file), "--run-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: limits.queue_timeout:")
    assert "Traceback" not in result.stderr
