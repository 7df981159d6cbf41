"""A whole portrait-ha cluster for a benchmark or a test: ``launch.py`` on free loopback ports.

``LaunchedCluster`` writes a cluster file (``bench.harness.cluster_options``) with a free port for
every listener and node part, starts ``python launch.py`` on it through
``bench.harness.processes.Processes`` (so the whole process tree is killed by PID when the block
ends, on errors and Ctrl-C too), and waits until HAProxy shows every node part UP. What it then
reports is ``ClusterStatus``'s (``bench.harness.cluster_status``); here are the processes: the PID
of a node's worker or web front (only ever one this cluster started), killing it, restarting it all.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from balancer.config.cluster import ClusterSpec
from balancer.config.loading import parse_cluster
from balancer.haproxy.process import RuntimeAPI
from bench.harness.cluster_options import ClusterOptions, cluster_file_data
from bench.harness.cluster_status import ClusterStatus
from bench.harness.processes import REPO, TEARDOWN_GRACE, Processes
from bench.harness.waiting import wait_http
from webui.settings_common import default_cache_dir

logger = logging.getLogger(__name__)


class LaunchedCluster(ClusterStatus):
    """``launch.py`` with its own ports; a context manager that always stops it."""

    def __init__(self, options: ClusterOptions, name: str = "cluster", processes: Processes | None = None,
                 run_dir: Path | None = None, tree: Path = REPO) -> None:
        """``processes``: a group owned by the caller (a test fixture) that stops the cluster itself;
        ``run_dir``: where haproxy.cfg, the socket and node logs go (default: a temporary dir,
        removed when the cluster stops cleanly; pass one together with ``processes``);
        ``tree``: the checkout whose ``launch.py`` runs (another revision's, ``bench.harness.revisions``).
        """
        self.options = options
        self.tree = tree
        self.name = name
        self.processes = processes or Processes(f"bench-{name}")
        self._owns_processes = processes is None
        self._owns_run_dir = run_dir is None
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"portrait-{name}-")) if run_dir is None else run_dir
        self.spec: ClusterSpec = parse_cluster(options.cluster_data(self.run_dir))
        self.runtime = RuntimeAPI(self.spec.socket_path)
        self.proc = None

    # ------------------------------------------------------------------ start and stop
    def start(self) -> LaunchedCluster:
        """Start ``launch.py`` and wait until every node part is UP in HAProxy."""
        self.launch()
        wait_http(f"{self.sidecar_url}/status", timeout=self.options.start_timeout, proc=self.proc)
        self.wait_all_up(self.options.start_timeout)
        logger.info("cluster %s ready: %s", self.name, self.public_url)
        return self

    def launch(self) -> LaunchedCluster:
        """Start ``launch.py`` and return at once (``start`` also waits until it is up)."""
        if self.options.model == "demo":
            # Build the offline demo model once, before several workers would race to build it
            # (imported here: it pulls in diffusers, which a cluster of another model never needs).
            from webui.worker.pipelines.loader import ensure_demo_model

            ensure_demo_model(default_cache_dir())
        config = self.run_dir / "cluster.yaml"
        config.write_text(yaml.safe_dump(cluster_file_data(self.spec, self.tree)), encoding="utf-8")
        env = {"PYTHONUNBUFFERED": "1", **self.options.env}
        self.proc = self.processes.start(["python", "launch.py", "--cluster", str(config)], env=env,
                                         log_name=f"{self.name}-launch", cwd=self.tree)
        logger.info("cluster %s starting (log: %s)", self.name, self.proc.log_path)
        return self

    def stop(self, keep_run_dir: bool = False) -> None:
        """Stop launch.py (SIGTERM, then SIGKILL for the whole tree) and remove the run dir.

        With ``keep_run_dir`` (after an error) the run dir stays for its node logs.
        """
        if self._owns_processes:
            self.processes.stop_all(TEARDOWN_GRACE)
        if keep_run_dir:
            logger.info("cluster %s: node logs kept in %s/logs", self.name, self.run_dir)
        elif self._owns_run_dir and self._owns_processes:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def restart(self, spec: ClusterSpec | None = None) -> LaunchedCluster:
        """Stop launch.py (the whole tree) and start it again on the same run dir, ports and store; with ``spec``
        (e.g. ``self.spec.model_copy(update=...)``) the cluster file changes meanwhile, as an operator's edit."""
        if not self._owns_processes:
            raise RuntimeError("restart stops this cluster's processes: give it no processes group of the caller's")
        self.processes.stop_all()
        if spec is not None:
            self.spec, self.runtime = spec, RuntimeAPI(spec.socket_path)
        return self.start()

    def __enter__(self) -> LaunchedCluster:
        try:
            return self.start()
        except BaseException:
            self.stop(keep_run_dir=True)
            raise

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.stop(keep_run_dir=exc_type is not None)

    def wait_all_up(self, timeout: float) -> None:
        """Wait until every node part is UP; ``TimeoutError`` naming the others."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"launch.py exited with {self.proc.returncode}; see {self.proc.log_path}")
            if self.all_up():
                return
            time.sleep(0.25)
        raise TimeoutError(f"not every node part came UP within {timeout}s: {self.servers()}")

    # ------------------------------------------------------------------ its processes
    def pid(self, node: str, part: str) -> int:
        """PID of a node's running ``web`` or ``worker`` process, from the sidecar's status.

        Checked to be a descendant of our own launch.py, so that we only ever signal
        processes we started.
        """
        return self._own_pid(self.part_status(node, part).get("pid"), f"{node}/{part}")

    def balancer_pid(self, name: str) -> int:
        """PID of a process the sidecar runs beside the nodes (``haproxy``, ``jobs``), checked like ``pid``."""
        return self._own_pid(self.status()[name].get("pid"), name)

    def _own_pid(self, pid: Any, what: str) -> int:
        if not isinstance(pid, int):
            raise RuntimeError(f"the sidecar reports no PID for {what}")
        if self.proc is None or pid not in {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}:
            raise RuntimeError(f"PID {pid} of {what} is not one of the processes this cluster started")
        return pid

    def kill(self, node: str, part: str) -> int:
        """SIGKILL a node's ``web`` or ``worker`` process; its PID."""
        pid = self.pid(node, part)
        os.kill(pid, signal.SIGKILL)
        logger.info("SIGKILL %s/%s (pid %d)", node, part, pid)
        return pid

    def process_tree(self) -> list[psutil.Process]:
        """launch.py and every process below it (HAProxy, sidecar, node parts)."""
        if self.proc is None:
            return []
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]
