"""A lost node host costs seconds: real hosts (network namespaces), real faults, real processes.

A balancer host (``launch.py --role balancer``: HAProxy and its sidecar) and two node hosts
(``launch.py --role node``: a sidecar with a worker and a web front, its host agent answering HAProxy's
agent checks; the workers serve the fixed-latency stand-in, 1.5 s a job, not a model: the subject is the
hosts), each in its own network namespace on a private test subnet
(``bench.harness.netns``, ``bench.harness.hosts_cluster``). The test process is a client on the same
subnet. Faults while a REST job runs on a node host: its link goes down, every packet to it is
dropped, every process of it is SIGSTOPped. The job must finish on the other host; how much later
than a job without a fault, and how soon HAProxy took the lost host out of rotation, are printed
and written to ``test-artifacts/hosts-failover.json`` (reported, not asserted beyond logic bounds;
``python -m bench.hosts`` tabulates them). A worker killed on a node host must leave HAProxy's
rotation through the host agent (``MAINT``), not only through a failing health check. A UI client
whose sticky web front is on the host whose link goes down mid-job (a reused ``gradio_client``, a browser tab
speaking Gradio's protocol) gets its result with no resend: its joins and event stream go through the jobs
service's relay, and another web front takes the call over (issue 21, item 1); how much longer than a normal job
that took is printed and recorded.

A web front that comes back (issue 21, item 1): a ``gradio_client`` pinned to node1's web front by its cookie gets
its next job done on node2's front while node1's is killed and restarted; once node1's is back in rotation, the
result's download (the cookie sends it to node1) and the client's next calls succeed. The restarted front, busy
with its first calls beside a CPU hog, is never marked DOWN by the example's 0.5 s checks; frozen, it is.

Root only (CI runs as root), with ``ip`` and Debian's ``iptables``; select with ``-m hosts``.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from gradio_client import Client
from gradio_client.utils import encode_file_path

from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.haproxy.process import status_is_out
from bench.harness.front_return import HOGS, check_failures, cmdline, cpu_hogs, pinned_headers, web_front_pid
from bench.harness.generation import Job, check_image
from bench.harness.hosts_cluster import NODE_HOSTS, HostsCluster
from bench.harness.lost_host import FAULTS, lose_host_mid_job
from bench.harness.lost_web_front import UI_CLIENTS, lose_web_front_mid_job
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.processes import REPO, Processes
from bench.harness.waiting import wait_until
from tests.helpers import record_figures

pytestmark = [pytest.mark.hosts, pytest.mark.skipif(missing_for_labs() is not None, reason=missing_for_labs() or "")]

ARTIFACT = REPO / "test-artifacts" / "hosts-failover.json"
HEALTH = {**load_cluster_file(REPO / "assets" / "cluster.hosts.example.yaml")["health"], "slowstart": 0}
"""The documented multi-host checks, without slowstart: right after the start, and after each fault, a returning
worker's maxconn would ramp up over it (10 s), withholding the dispatch agent's second slot."""
WORKER = ["--model", "standin:1.5", "--threads", "1"]
"""Long enough a job for a fault to come in its middle."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostsCluster]:
    run_dir = tmp_path_factory.mktemp("hosts")
    with Processes("hosts") as processes, NetworkLab(["b", *NODE_HOSTS.values()], processes) as lab:
        hosts = HostsCluster(lab, run_dir, HEALTH, worker_args=WORKER)
        hosts.start(timeout=240)
        yield hosts


@pytest.fixture(scope="module")
def baseline(cluster: HostsCluster) -> float:
    """Seconds one job takes with nothing wrong: one job, as the stand-in's latency is fixed (no model to vary)."""
    return cluster.baseline(count=1)


def test_a_node_host_worker_takes_its_next_job_while_a_result_is_encoded(cluster: HostsCluster) -> None:
    """A node host's worker keeps its dispatch agent (issue 11's duty cycle): on loopback only, its answer
    passed on by the host agent, and applied by the balancer's HAProxy: under saturating load of large images
    a worker holds a second job while the last result is PNG-encoded (smax 2 with maxconn 1)."""
    cluster.wait_all_up(timeout=60)
    spec = parse_cluster(load_cluster_file(cluster.file))
    node1 = next(node for node in spec.nodes if node.name == "node1")
    host, dispatch_port = spec.node_host(NODE_HOSTS["node1"]), node1.worker.dispatch_agent_port  # type: ignore[union-attr]
    host_agent_port, address = host.host_agent_port, host.address
    with socket.create_connection((address, host_agent_port), timeout=5) as sock:
        sock.sendall(b"workers/node1\n")
        assert sock.makefile().readline().strip() == "ready maxconn:1 up"  # the worker's words, through its host
    with pytest.raises(OSError):
        socket.create_connection((address, dispatch_port), timeout=2).close()  # not on the network
    assert all(not row["throttle"] for row in cluster.api.show_stat() if row["pxname"] == "workers")  # no slowstart

    def client(index: int) -> int:
        return cluster.generate(prompt=f"saturating {index}", width=768, height=768, steps=2,
                                seed=200 + index).status_code

    # One job more than workers: it waits in HAProxy's queue until the first worker to finish generating
    # opens its window (encoding 768²: ~80 ms, against the agent's 10 ms polls; a job: 1.5 s).
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(client, range(3)))
    rows = {row["svname"]: row for row in cluster.api.show_stat()
            if row["pxname"] == "workers" and row["svname"] in NODE_HOSTS}
    print(f"\n3 jobs of 768² on 2 workers in {time.monotonic() - started:.1f} s; "
          f"smax {({name: row['smax'] for name, row in rows.items()})}")
    assert codes == [200] * 3
    assert max(int(row["smax"]) for row in rows.values()) == 2, rows


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_lost_host_mid_job_costs_seconds(cluster: HostsCluster, baseline: float, fault: str) -> None:
    lost = lose_host_mid_job(cluster, fault, into_job=min(1.0, baseline / 3))
    assert isinstance(lost.response, httpx.Response) and lost.response.status_code == 200, lost.response
    assert lost.response.json()["worker_id"] == lost.survivor  # replayed on the other host
    figures = {**lost.figures(), "job_alone_s": round(baseline, 2), "health": HEALTH, "load_average": os.getloadavg()}
    record_figures(ARTIFACT, fault, figures)
    print(f"\n{fault} {figures['fault_into_job_s']} s into the job: job {figures['job_s']} s, its replay "
          f"{figures['replay_s']} s: {figures['extra_s']:+} s; {lost.lost_node} out of rotation "
          f"{figures['out_of_rotation_after_s']} s after the fault; load {figures['load_average']}")
    assert lost.job_s - (lost.replay_s or 0) < 60  # a logic bound: replayed at once, not after timeout server (600 s)


@pytest.mark.parametrize("kind", UI_CLIENTS)
def test_a_ui_client_whose_web_front_is_lost_mid_job_completes(cluster: HostsCluster, baseline: float,
                                                                kind: str) -> None:
    lost = lose_web_front_mid_job(cluster, "link-down", kind, into_job=min(1.0, baseline / 3))
    figures = {**lost.figures(), "load_average": os.getloadavg()}
    record_figures(ARTIFACT, f"web-front-lost-{kind}", figures)
    print(f"\n{kind} on {lost.web_node}'s web front, link down {figures['fault_into_job_s']} s into its job: "
          f"{figures['tries']} tries (first: {figures['first_try']}), resent {figures['resend_after_s']} s after "
          f"the fault, image after {figures['job_s']} s against {figures['normal_s']} s normally: "
          f"{figures['extra_s']:+} s; load {figures['load_average']}")
    assert lost.reply is not None, lost.attempts
    assert lost.reply.web_node is not None and lost.reply.web_node != lost.web_node  # another web front finished it
    # The call went on at another web front (the jobs service's relay had it take the call over): no resend.
    assert [attempt.outcome for attempt in lost.attempts] == ["ok"], lost.attempts


def test_a_killed_worker_on_a_node_host_leaves_rotation_through_the_host_agent(cluster: HostsCluster) -> None:
    cluster.wait_all_up(timeout=60)
    worker = next(pid for pid in cluster.lab.pids("n2") if "webui.worker" in " ".join(cmdline(pid)))
    killed_at = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    seen = wait_until(lambda: (status := cluster.statuses()["workers/node2"]) != "UP" and status,
                      "workers/node2 out of rotation", 10, 0.01)
    out_after = time.monotonic() - killed_at
    # The sidecar restarts it (model load: seconds); meanwhile its host agent keeps it in maint.
    wait_until(lambda: cluster.statuses()["workers/node2"] == "MAINT", "workers/node2 MAINT via the host agent",
               10, 0.02)
    maint_after = time.monotonic() - killed_at
    cluster.wait_all_up(timeout=120)
    back_after = time.monotonic() - killed_at
    record_figures(ARTIFACT, "worker-killed", {"first_status": seen, "out_after_s": round(out_after, 2),
                                               "maint_after_s": round(maint_after, 2),
                                               "back_up_after_s": round(back_after, 2),
                                               "load_average": os.getloadavg()})
    print(f"\nworker killed on n2: {seen} after {out_after:.2f} s, MAINT (host agent) after {maint_after:.2f} s, "
          f"back UP after {back_after:.1f} s")
    assert maint_after < 5  # a logic bound: host agent intervals, not a health-check timeout


RETURNING = "node1"
"""The web front that is killed and comes back."""
PINNED_JOB = Job(prompt="studio portrait, pinned client", steps=4, width=256, height=256, seed=31)


def pinned_client(cluster: HostsCluster, node: str) -> Client:
    """A ``gradio_client`` whose every request carries the stickiness cookie of ``node``'s web front (as a client
    that first met that front keeps it), files not downloaded (the test downloads them as the client would)."""
    return Client(cluster.url + "/", headers=pinned_headers(node), download_files=False, verbose=False)


def predict(client: Client, job: Job) -> tuple[str, dict]:
    """One ``/generate`` call: the first result's path on its web front, and the call's info."""
    gallery, info = client.predict(job.prompt, "", job.steps, job.guidance, job.width, job.height, job.seed,
                                   job.lora_scale, 1, api_name="/generate")
    first = gallery[0]
    return (first.get("image", first) if isinstance(first, dict) else first[0])["path"], info


def download(cluster: HostsCluster, client: Client, path: str) -> httpx.Response:
    """The result download ``gradio_client`` makes after a call (its headers and cookies, through the balancer)."""
    return httpx.get(f"{cluster.url}/gradio_api/file={encode_file_path(path)}", headers=client.headers,
                     cookies=client.cookies, timeout=60)


@pytest.fixture(scope="module")
def returned(cluster: HostsCluster) -> Iterator[tuple[Client, str, dict]]:
    """A client pinned to RETURNING's web front; that front killed, the client's next job done on the other one
    (no resend); RETURNING's front restarted by its sidecar and back UP at full check health. Yields the client,
    the path of that job's result on the other front, and the job's info."""
    cluster.wait_all_up(timeout=60)
    client = pinned_client(cluster, RETURNING)
    try:
        assert predict(client, PINNED_JOB)[1]["web_node"] == RETURNING
        os.kill(web_front_pid(cluster, RETURNING), signal.SIGKILL)
        wait_until(lambda: status_is_out(cluster.statuses()[f"webs/{RETURNING}"]), "the killed front out", 10, 0.02)
        path, info = predict(client, replace(PINNED_JOB, seed=32))
        assert info["web_node"] != RETURNING
        cluster.wait_all_up(timeout=120)  # the sidecar restarted it; the balancer checked it back
        yield client, path, info
    finally:
        client.close()


def test_a_result_made_while_the_pinned_front_was_away_downloads_once_it_is_back(
        cluster: HostsCluster, returned: tuple[Client, str, dict]) -> None:
    client, path, info = returned
    response = download(cluster, client, path)  # the cookie sends it to the returned front, which never made it
    assert response.status_code == 200, (response.status_code, response.text[:300])
    check_image(response.content, replace(PINNED_JOB, seed=32))
    stored = httpx.get(f"{cluster.url}/v1/jobs/{info['job_id']}/results/0", timeout=60)
    assert stored.status_code == 200 and response.content == stored.content  # the job store's bytes


def test_a_returned_front_busy_with_first_calls_is_never_marked_down(cluster: HostsCluster,
                                                                      returned: tuple[Client, str, dict]) -> None:
    """Its first calls (the pinned client's next ones, three more clients' first) with streams in flight and
    CPU hogs beside them: HAProxy's status and log show no DOWN of it; every call completes there."""
    client = returned[0]
    log = cluster.run_dirs["b"] / "haproxy.log"
    offset, failed_checks = log.stat().st_size, check_failures(cluster, RETURNING)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            seen.append(cluster.statuses().get(f"webs/{RETURNING}", "?"))

    def calls(index: int) -> list[tuple[str, dict]]:
        caller = client if index == 0 else pinned_client(cluster, RETURNING)
        try:
            return [predict(caller, replace(PINNED_JOB, seed=40 + 10 * index + k)) for k in range(2)]
        finally:
            if caller is not client:
                caller.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with cpu_hogs():
            with ThreadPoolExecutor(4) as pool:
                results = [result for batch in pool.map(calls, range(4)) for result in batch]
            downloads = [download(cluster, client, path).status_code for path, _ in results]
    finally:
        done.set()
        watcher.join()
    with log.open("rb") as lines:
        lines.seek(offset)
        downs = [line for line in lines.read().decode(errors="replace").splitlines()
                 if f"webs/{RETURNING} is DOWN" in line]
    failed_checks = check_failures(cluster, RETURNING) - failed_checks
    print(f"\n{len(results)} calls on the returned front beside {HOGS} CPU hogs; its statuses: {sorted(set(seen))}; "
          f"failed checks: {failed_checks}")
    assert not downs, downs
    # "UP 1/2" (one check failed, the next passed) is allowed: beside the suite's other process and its own hogs a
    # single check can miss its 0.5 s on a 2-core machine; two in a row would be a DOWN, which must never come.
    assert set(seen) <= {"UP", "UP 1/2"}, sorted(set(seen))
    assert {info["web_node"] for _, info in results} == {RETURNING}
    assert downloads == [200] * len(results)


def test_a_frozen_web_front_still_goes_down_within_its_checks(cluster: HostsCluster) -> None:
    cluster.wait_all_up(timeout=60)
    pid = web_front_pid(cluster, RETURNING)
    os.kill(pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait_until(lambda: cluster.statuses()[f"webs/{RETURNING}"] == "DOWN", "the frozen front DOWN", 10, 0.01)
        down_after = time.monotonic() - frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    record_figures(ARTIFACT, "web-front-frozen", {"down_after_s": round(down_after, 2), "health": HEALTH,
                                                    "load_average": os.getloadavg()})
    print(f"\nfrozen web front DOWN after {down_after:.2f} s (checks: {HEALTH})")
    cluster.wait_all_up(timeout=60)
