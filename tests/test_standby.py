"""Warm standby workers (``standby: true``), end to end: real ``launch.py``, HAProxy, sidecar, workers.

One cluster of two nodes on the fixed-latency stand-in (``--model standin:SECONDS``: the subject is the
standby's hand-over, not the model), each worker with a warm standby, shared by the tests in order: a
SIGKILLed worker is replaced by its standby (its PID becomes the worker's, a job runs there, a new
standby loads); a worker's OOM exit likewise; stopping ``launch.py`` stops the standbys it runs and leaves
nothing running. A standby that cannot load crash-loops on its own while its worker keeps serving: that
test has a one-node cluster of its own on a copy of the demo model (a real model, which it takes away
from the standby that restarts). Also: the setting is off by default, ``launch.py --standby`` turns it
on, a web front has none. Kill-to-ready times go to ``test-artifacts/standby.json``: reported, not asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from pydantic_settings import CliApp

from balancer.config.basics import ClusterConfigError
from balancer.config.loading import parse_cluster
from balancer.config.settings import LaunchSettings
from bench.harness.cluster_options import ClusterOptions
from bench.harness.generation import CallFailed, Job
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import REPO, Processes
from bench.harness.rest_client import RestClient
from bench.harness.waiting import wait_until
from tests.helpers import record_figures
from tests.suite_cluster import suite_options
from webui.contract import EXIT_LOAD_FAILED, EXIT_OOM, FAULT_OOM_AT_STEP, FAULT_PROMPT_MARKER

OOM_MARKER = "[[standby-oom]]"
ARTIFACT = REPO / "test-artifacts" / "standby.json"


def small_job(index: int, prompt: str = "studio portrait") -> Job:
    """A quick generation (128x128, 2 steps)."""
    return Job(prompt=f"{prompt} {index}", steps=2, width=128, height=128, seed=2000 + index)


STANDIN = "standin:0.1"
"""The shared cluster's model: 0.1 s a job."""


def cluster_options(model: str, nodes: int) -> ClusterOptions:
    """``nodes`` nodes on ``model``, each worker with a warm standby; an OOM exit after one injected OOM."""
    return suite_options(
        model=model, lora="none", nodes=nodes, webs=False, threads=1, start_timeout=240, standby=True,
        worker_args=["--max-consecutive-ooms", "1"],
        worker_env={FAULT_OOM_AT_STEP: "2", FAULT_PROMPT_MARKER: OOM_MARKER},
        sidecar={"probe_interval": 0.25, "start_timeout": 180, "backoff_initial": 0.2, "crash_loop_deaths": 2,
                 "crash_loop_window": 600, "stop_grace": 5},
    )


@contextmanager
def running(options: ClusterOptions, name: str, run_dir: Path, standbys_at_stop: bool) -> Iterator[LaunchedCluster]:
    """The cluster, started and ready; at the end SIGTERM to ``launch.py``, which must leave nothing running
    (and, with ``standbys_at_stop``, must have had a standby running to stop)."""
    with Processes(name) as processes:
        launched = LaunchedCluster(options, name=name, processes=processes, run_dir=run_dir)
        launched.start()
        launched.wait_all_ready(timeout=240)
        yield launched
        children = psutil.Process(launched.proc.pid).children(recursive=True)
        standbys = [entry["pid"] for entry in (launched.part_status(node, "worker")["standby"]
                                               for node in launched.node_names) if entry["pid"]]
        launched.proc.send_signal(signal.SIGTERM)
        assert launched.proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert standbys or not standbys_at_stop, "no standby was running when the cluster stopped"
        assert not alive, f"left running after launch.py stopped: {alive}"
        assert not any(psutil.pid_exists(pid) for pid in standbys)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    with running(cluster_options(STANDIN, 2), "standby", tmp_path_factory.mktemp("standby-cluster"),
                 standbys_at_stop=True) as launched:
        yield launched


@pytest.fixture
def model_copy(demo_model_dir: Path, tmp_path: Path) -> Path:
    """The demo model in a directory of this test's (the test removes it)."""
    return Path(shutil.copytree(demo_model_dir, tmp_path / "model" / "demo"))


@pytest.fixture
def demo_cluster(model_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedCluster]:
    """One node on ``model_copy``, its worker with a warm standby."""
    with running(cluster_options(str(model_copy), 1), "standby-demo", tmp_path_factory.mktemp("standby-demo"),
                 standbys_at_stop=False) as launched:
        yield launched


def test_standby_is_off_by_default_a_launch_flag_and_a_worker_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("balancer.config.settings.list_gpus", list)  # a machine without GPUs

    def standbys(*flags: str) -> list[bool]:
        spec = CliApp.run(LaunchSettings, cli_args=["--threads", "1", *flags]).cluster_spec()
        return [node.worker.standby for node in spec.nodes]

    assert standbys() == [False, False]
    assert standbys("--standby") == [True, True]
    with pytest.raises(ClusterConfigError, match="standby is a worker setting"):
        parse_cluster({"nodes": [{"name": "n1", "web": {"port": 7860, "standby": True}}]})


def test_a_standby_that_cannot_load_leaves_its_worker_serving(demo_cluster: LaunchedCluster, model_copy: Path) -> None:
    cluster = demo_cluster
    standby = cluster.wait_standbys(timeout=180)["node1"]
    worker_pid = cluster.pid("node1", "worker")
    assert standby["pid"] in {proc.pid for proc in cluster.process_tree()}  # ours to kill
    shutil.rmtree(model_copy)  # every later load of this model fails (EXIT_LOAD_FAILED)
    os.kill(standby["pid"], signal.SIGKILL)

    def given_up() -> dict | None:
        entry = cluster.part_status("node1", "worker")["standby"]
        return entry if entry["state"] == "failed" else None

    failed = wait_until(given_up, "node1's standby given up", 120, interval=0.25)
    assert failed["failures"] == 2 and failed["last_detail"] == f"exited with status {EXIT_LOAD_FAILED} while loading"
    entry = cluster.part_status("node1", "worker")
    assert entry["pid"] == worker_pid and entry["state"] == "ready"
    assert_serves(cluster, "node1")


def promoted(cluster: LaunchedCluster, node: str, standby_pid: int, promotions: int) -> dict:
    """Wait until the node's worker is its former standby and ready; its ``/status`` entry."""
    def ready() -> dict | None:
        entry = cluster.part_status(node, "worker")
        done = entry["pid"] == standby_pid and entry["state"] == "ready"
        return entry if done and entry["standby"]["promotions"] == promotions else None

    return wait_until(ready, f"{node}/worker promoted pid {standby_pid}", 60, interval=0.05)


def worker_client(cluster: LaunchedCluster, node: str) -> RestClient:
    """A client of the node's worker port itself (with the cluster secret it asks for)."""
    return RestClient(cluster.part_url(node, "worker"), timeout=120, headers=cluster.internal_headers)


def assert_serves(cluster: LaunchedCluster, node: str) -> None:
    """A job sent to the node's worker (through its port, now the former standby's) succeeds."""
    reply = worker_client(cluster, node).generate(small_job(1))
    assert reply.worker_id == node and reply.pixels_sha256  # a checked, decoded image


def test_sigkilled_worker_is_replaced_by_its_standby(cluster: LaunchedCluster) -> None:
    standby = cluster.wait_standbys(timeout=180)["node1"]
    old_pid = cluster.pid("node1", "worker")
    killed_at = time.monotonic()
    cluster.kill("node1", "worker")
    entry = promoted(cluster, "node1", standby["pid"], promotions=1)
    ready_after = time.monotonic() - killed_at
    cluster.wait_all_up(60)
    up_after = time.monotonic() - killed_at
    assert entry["last_cause"] == "signal" and entry["pid"] != old_pid
    assert_serves(cluster, "node1")
    assert RestClient(cluster.public_url, timeout=120).generate(small_job(2)).pixels_sha256
    fresh = wait_until(lambda: cluster.part_status("node1", "worker")["standby"]["pid"], "a new standby", 30)
    assert fresh not in (standby["pid"], old_pid)
    assert cluster.part_status("node1", "worker")["standby"]["starts"] == 2
    record_figures(ARTIFACT, "sigkill", {"kill_to_sidecar_ready_s": round(ready_after, 3),
                                         "kill_to_all_up_in_haproxy_s": round(up_after, 3),
                                         "load_average": os.getloadavg()})


def test_oom_exit_is_replaced_by_the_standby(cluster: LaunchedCluster) -> None:
    standby = cluster.wait_standbys(timeout=180)["node2"]
    old_pid = cluster.pid("node2", "worker")
    with pytest.raises(CallFailed, match="507"):
        worker_client(cluster, "node2").generate(small_job(3, OOM_MARKER))
    entry = promoted(cluster, "node2", standby["pid"], promotions=1)
    assert entry["last_cause"] == "oom_exit" and entry["last_returncode"] == EXIT_OOM
    assert not psutil.pid_exists(old_pid)
    assert_serves(cluster, "node2")
