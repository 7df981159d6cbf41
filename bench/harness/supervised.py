"""HAProxy and ``python -m balancer.sidecar`` started apart, the sidecar supervising the nodes it is given.

``SupervisedCluster`` is for tests of supervision itself (deaths, crash loops, hangs, operator
commands): its nodes are usually stand-in processes given as each part's ``command``, quick to
kill, crash or freeze, and the sidecar probes them every 0.2 s. ``LaunchedCluster`` runs real
nodes under ``launch.py``; ``bench.harness.balancer`` runs HAProxy alone.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from balancer.config.loading import parse_cluster
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI
from bench.harness.balancer import cluster_data, running_haproxy
from bench.harness.processes import TEARDOWN_GRACE, Processes, free_port
from bench.harness.waiting import wait_http, wait_until

logger = logging.getLogger(__name__)

QUICK_SUPERVISION: dict[str, Any] = {
    "probe_interval": 0.2, "probe_timeout": 2.0, "stuck_after": 4.0, "hang_after": 1.0, "backoff_initial": 0.2,
    "backoff_max": 1.0, "crash_loop_deaths": 4, "crash_loop_window": 60, "stop_grace": 3.0,
}
"""Sidecar settings that make deaths, hangs and crash loops show within seconds."""


class SupervisedCluster:
    """HAProxy + ``python -m balancer.sidecar`` supervising ``nodes``; a context manager that stops both."""

    def __init__(self, run_dir: Path, processes: Processes, nodes: list[dict[str, Any]],
                 health: dict[str, Any] | None = None, sidecar: dict[str, Any] | None = None) -> None:
        """``nodes`` and ``health`` as in a cluster file (default health: the default checks); ``sidecar``: settings
        over ``QUICK_SUPERVISION``.

        The sidecar reads a fake cgroup OOM counter, ``oom_counter``, which a test may bump.
        """
        self.run_dir = run_dir
        self.processes = processes
        self.oom_counter = run_dir / "memory.oom_control"
        self.oom_counter.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
        self.data = cluster_data(
            run_dir, [], [],
            sidecar={"port": free_port(), **QUICK_SUPERVISION, "oom_counter_file": str(self.oom_counter),
                     **(sidecar or {})},
            nodes=nodes, **({"health": health} if health is not None else {}),
        )
        self.spec = parse_cluster(self.data)
        self.api = RuntimeAPI(self.spec.socket_path)
        self.sidecar_url = self.spec.sidecar.url
        self.haproxy: HAProxyProcess | None = None
        self.proc: subprocess.Popen | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> SupervisedCluster:
        """Start HAProxy, then the sidecar; return once the sidecar answers."""
        self.haproxy = self._stack.enter_context(running_haproxy(self.spec))
        cluster_file = self.run_dir / "cluster.yaml"
        cluster_file.write_text(yaml.safe_dump(self.data))
        self.proc = self.processes.start(["python", "-m", "balancer.sidecar", "--cluster", str(cluster_file)],
                                         log_name="sidecar")
        wait_http(f"{self.sidecar_url}/status", proc=self.proc, timeout=30)
        return self

    def stop(self) -> None:
        """Stop the sidecar (and the nodes under it), then HAProxy."""
        self.processes.stop_all(TEARDOWN_GRACE)
        self._stack.close()

    def __enter__(self) -> SupervisedCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        """The sidecar's ``/status`` JSON."""
        return httpx.get(f"{self.sidecar_url}/status", timeout=5).json()

    def part(self, node: str, part: str = "worker") -> dict[str, Any]:
        """The sidecar's entry for one node part."""
        return self.status()["nodes"][node][part]

    def wait_part(self, node: str, part: str, what: str, check: Callable[[dict[str, Any]], bool],
                  timeout: float = 20.0) -> dict[str, Any]:
        """Wait until a node part's entry passes ``check``; the entry."""
        def matching() -> dict[str, Any] | None:
            entry = self.part(node, part)
            return entry if check(entry) else None

        return wait_until(matching, f"{node}/{part}: {what}", timeout, interval=0.05)

    def wait_ready(self, node: str, part: str = "worker", restarts: int = 0, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until a node part is ready after at least ``restarts`` restarts; its entry."""
        return self.wait_part(node, part, f"ready after {restarts} restarts",
                              lambda e: e["state"] == "ready" and e["restarts"] >= restarts, timeout)
