"""A rolling restart under clients that are never idle, with the web fronts on jobs (``jobs.web_fronts``, the
default): every web front and worker runs a new process, the workers run the new ``--model`` the operator asked for
(``/readyz``; a LoRA changes the same flags, and a real model's load with one is ``tests/test_models.py``), no
request fails, at most one node is out of rotation at a time, and the restart waits on each node no longer than its
worker's job in flight (``STANDIN_SECONDS``) and a quiet ``SETTLE``, however busy its web front's sticky clients
are: a stopping web front hands them on (``webui.web.handoff``).

One stand-in cluster (2 nodes, ``standin:STANDIN_SECONDS``); one REST client, one reused ``gradio_client`` and one
browser-protocol tab, each starting its next call as soon as the last one ends. Without the hand-off a web front
whose clients are never idle is never restarted (the restart gives up after ``--drain-timeout``). Run under the
cluster lock: ``flock /tmp/ph-cluster.lock python -m pytest -q tests/test_rolling_jobs.py``.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import pytest

from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import OK, Clock, LoadClient, Record, timed_call, under_load
from bench.harness.rest_client import RestClient
from tests.suite_cluster import suite_options
from tests.test_operations import ctl, worker_model, workers_up

NODES = ("node1", "node2")
PARTS = ("web", "worker")
STANDIN_SECONDS = 0.3
"""A job's length on the stand-in worker."""
MODEL, NEW_MODEL = f"standin:{STANDIN_SECONDS:g}", "standin:0.25"
"""The workers' model before and after the restart."""
SETTLE = 0.5
"""The rolling restart's ``--settle``: seconds a drained worker must be quiet before its node restarts."""
DRAIN_BOUND = 10 * STANDIN_SECONDS + 2 * SETTLE
"""The restart's ``--drain-timeout`` and the bound on each node's wait before its restart: the drained worker's job
in flight, then ``SETTLE`` quiet, with ample room for a loaded machine. Its processes' start is not counted (the
CPU's; bounded by ``ready_timeout``)."""
STOP_GRACE = 20.0
"""Seconds the sidecar gives a stopping part: far more than a web front's calls under way take to end."""
LOAD_SECONDS = 300.0
"""Upper bound of the load; it stops as soon as the rolling restart has ended."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LaunchedCluster]:
    options = suite_options(model=MODEL, nodes=len(NODES), threads=1, start_timeout=180,
                            sidecar={"probe_interval": 0.2, "stop_grace": STOP_GRACE},
                            extra={"jobs": {"web_fronts": True},
                                   "health": {"down_interval": 0.25, "slowstart": 0}})
    with LaunchedCluster(options, name="rolling-jobs") as launched:
        launched.wait_jobs_ready()
        yield launched


def never_idle_clients(url: str, clock: Clock, closers: list) -> list[LoadClient]:
    """REST, a reused gradio_client and a browser-protocol tab (the page's Gradio queue protocol, joining the
    ``/generate`` API event: with jobs, the Generate button's own event only submits), none pausing."""
    clients = []
    for index, (kind, client) in enumerate((("rest", RestClient(url)), ("gradio_client", GradioApiClient(url + "/")),
                                            ("browser", BrowserProtocolClient(url, api_name="generate")))):
        closers.append(client.close)

        def call(i: int, index: int = index, kind: str = kind, client=client) -> Record:
            job = Job(prompt=f"never idle {i}", steps=2, width=256, height=256, seed=100 * index + i)
            return timed_call(clock, kind, kind, True, lambda: client.generate(job))

        clients.append(LoadClient(kind, call, max_requests=1000))
    return clients


def test_rolling_restart_under_never_idle_clients_replaces_every_part_and_fails_no_request(
        cluster: LaunchedCluster) -> None:
    cluster.wait_all_ready(120)
    before = {(node, part): cluster.pid(node, part) for node in NODES for part in PARTS}
    assert {worker_model(cluster, node) for node in NODES} == {MODEL}
    clock, closers = Clock(), []
    result: dict[str, subprocess.CompletedProcess] = {}
    clients = never_idle_clients(cluster.public_url, clock, closers)

    def operate(stop: threading.Event) -> None:
        stop.wait(1.0)  # every client under way first
        result["ctl"] = ctl(cluster, "rolling-restart", "--json", "--model", NEW_MODEL,
                            "--drain-timeout", f"{DRAIN_BOUND:g}", "--settle", f"{SETTLE:g}")

    with workers_up(cluster) as fewest_up:
        records = under_load(clients, closers, operate, LOAD_SECONDS)

    restart = result["ctl"]
    print(restart.stdout[-3000:], restart.stderr[-2000:])
    for record in records:
        if record.outcome != OK:
            print(f"{record.kind:14} {record.start:6.1f} {record.end:6.1f} {record.outcome} {record.detail[:150]}")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    report = json.loads(restart.stdout)
    failed = [(r.kind, round(r.start, 1), round(r.end, 1), r.detail) for r in records if r.outcome != OK]
    assert failed == [], (failed, report["events"])
    assert {record.kind for record in records} == {"rest", "gradio_client", "browser"}
    after = {(node, part): cluster.pid(node, part) for node in NODES for part in PARTS}
    assert all(after[key] != before[key] for key in before), (before, after)
    assert fewest_up.fewest == 1  # one node out at a time, never both
    assert {worker_model(cluster, node) for node in NODES} == {NEW_MODEL}
    waits = {node: report["nodes"][node]["drained_s"] for node in NODES}
    assert all(wait <= DRAIN_BOUND for wait in waits.values()), waits
    print("waited before each restart:", waits, "ready after:",
          {node: report["nodes"][node]["ready_s"] for node in NODES}, "calls:", len(records))
