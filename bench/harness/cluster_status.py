"""What a running portrait-ha cluster reports: its addresses, HAProxy's view and the sidecar's ``/status``.

``ClusterStatus`` answers what benchmarks and tests ask of a cluster described by a ``ClusterSpec``:
HAProxy's view of each server (runtime API), the sidecar's ``/status``, what each node part says
on ``/readyz``, and "is everything ready again?". ``LaunchedCluster``
(``bench.harness.launched_cluster``) extends it with the processes it starts and stops.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from balancer.config.cluster import ClusterSpec
from balancer.haproxy.config import PART_BACKENDS, WORKERS_BACKEND
from balancer.haproxy.names import JOBS_BACKEND, JOBS_SERVER
from balancer.haproxy.process import RuntimeAPI, ServerStatus, status_is_up
from balancer.system.cluster_secret import read_cluster_secret
from bench.harness.cluster_options import ClusterOptions
from bench.harness.waiting import wait_until
from webui.contract import CLUSTER_SECRET_HEADER


class ClusterStatus:
    """The addresses and state of a cluster: its options, spec, HAProxy runtime API and run dir."""

    options: ClusterOptions
    spec: ClusterSpec
    runtime: RuntimeAPI
    run_dir: Path

    # ------------------------------------------------------------------ addresses
    @property
    def public_url(self) -> str:
        """HAProxy's public frontend: browsers, gradio_client, REST."""
        return self.spec.public.url

    @property
    def sidecar_url(self) -> str:
        """The sidecar's status endpoint base URL."""
        return self.spec.sidecar.url

    @property
    def jobs_url(self) -> str:
        """This balancer's jobs service itself (behind the cluster secret: ``internal_headers``)."""
        return self.spec.jobs.url

    @property
    def node_names(self) -> list[str]:
        """Names of the nodes (web front + worker), in order; ``worker_only_nodes`` are left out."""
        return [node.name for node in self.spec.nodes if node.name not in self.options.worker_only_nodes]

    @property
    def internal_headers(self) -> dict[str, str]:
        """What a request straight to a worker must carry: the cluster secret launch.py wrote to the run dir."""
        secret = read_cluster_secret(self.run_dir)
        return {CLUSTER_SECRET_HEADER: secret} if secret else {}

    def part_url(self, node: str, part: str) -> str:
        """Base URL of a node's ``web`` or ``worker`` process."""
        spec = next(n for n in self.spec.nodes if n.name == node)
        return getattr(spec, part).url

    # ------------------------------------------------------------------ state
    def servers(self) -> list[ServerStatus]:
        """HAProxy's view of every node part (webs and workers backends), ``worker_only_nodes`` included."""
        return [s for s in self.runtime.servers() if s.backend in PART_BACKENDS.values()]

    def server_status(self, node: str, part: str) -> str:
        """HAProxy's status of one node part: UP, DOWN, MAINT, ..."""
        return self.runtime.server(PART_BACKENDS[part], node).status

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts each node of ``node_names`` runs."""
        return tuple(PART_BACKENDS) if self.options.webs else ("worker",)

    def all_up(self) -> bool:
        """Every part of every node in ``node_names`` is UP in HAProxy."""
        names = set(self.node_names)
        try:
            servers = [s for s in self.servers() if s.server in names]
        except OSError:
            return False
        return len(servers) == len(self.parts) * len(names) and all(s.is_up for s in servers)

    def all_ready(self) -> bool:
        """Every part of every node in ``node_names`` is ready in the sidecar and UP in HAProxy."""
        try:
            status = self.status()
            return all(
                sidecar_part(status, node, part)["state"] == "ready" and status_is_up(self.server_status(node, part))
                for node in self.node_names for part in self.parts
            )
        except (OSError, httpx.HTTPError):
            return False

    def wait_jobs_ready(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until the sidecar reports the jobs service ready and HAProxy has it UP (``start`` does not wait
        for it); its ``/status`` entry."""
        def ready() -> dict[str, Any] | None:
            entry = self.status().get("jobs") or {}
            up = entry.get("state") == "ready" and self.runtime.server(JOBS_BACKEND, JOBS_SERVER).is_up
            return entry if up else None

        return wait_until(ready, "the jobs service ready and UP", timeout, interval=0.1)

    def wait_all_ready(self, timeout: float = 120) -> None:
        """Wait until ``all_ready``; ``TimeoutError`` otherwise."""
        wait_until(self.all_ready, "every node part ready and UP", timeout, interval=0.25)

    def wait_restarted(self, node: str, part: str, restarts: int, timeout: float = 120) -> dict[str, Any]:
        """Wait until the sidecar reports a node part restarted ``restarts`` times (in all) and ready; its entry."""
        def restarted() -> dict[str, Any] | None:
            entry = self.part_status(node, part)
            return entry if entry["restarts"] >= restarts and entry["state"] == "ready" else None

        return wait_until(restarted, f"{node}/{part} restarted {restarts} times and ready", timeout, interval=0.1)

    def wait_standbys(self, timeout: float = 120) -> dict[str, dict[str, Any]]:
        """Wait until every node's worker has a loaded standby (``waiting``); node -> its standby's entry."""
        def loaded() -> dict[str, dict[str, Any]] | None:
            standbys = {node: self.part_status(node, "worker").get("standby") or {} for node in self.node_names}
            return standbys if all(s.get("state") == "waiting" for s in standbys.values()) else None

        return wait_until(loaded, "every worker's standby loaded", timeout, interval=0.25)

    def status(self) -> dict[str, Any]:
        """The sidecar's ``/status`` JSON."""
        return httpx.get(f"{self.sidecar_url}/status", timeout=5).raise_for_status().json()

    def part_status(self, node: str, part: str) -> dict[str, Any]:
        """The sidecar's entry for one node part (state, pid, restarts, last cause, ...)."""
        return sidecar_part(self.status(), node, part)

    def busy_workers(self, timeout: float) -> list[str]:
        """Nodes whose worker is generating right now (``/readyz`` says busy); waits up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = []
            for node in self.node_names:
                try:
                    if httpx.get(f"{self.part_url(node, 'worker')}/readyz", timeout=1).json().get("busy"):
                        busy.append(node)
                except (httpx.HTTPError, ValueError):
                    continue
            if busy:
                return busy
            time.sleep(0.05)
        return []

    def part_ids(self, part: str) -> dict[str, str]:
        """Node name -> the name a node's ``worker`` or ``web`` reports (``node`` in its ``/readyz``).

        Parts that do not answer right now are left out.
        """
        ids = {}
        for node in self.node_names:
            try:
                ids[node] = httpx.get(f"{self.part_url(node, part)}/readyz", timeout=5).json()["node"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue
        return ids

    def node_of(self, part: str, reported_id: str) -> str:
        """The node whose ``part`` reports ``reported_id`` (``KeyError`` if none)."""
        for node, value in self.part_ids(part).items():
            if value == reported_id:
                return node
        raise KeyError(f"no {part} reports the id {reported_id!r}")

    @contextlib.contextmanager
    def only_workers(self, names: list[str]) -> Iterator[None]:
        """Put every other worker in ``maint`` in HAProxy for the block, then back to ``ready``."""
        others = [n for n in self.node_names if n not in names]
        for node in others:
            self.runtime.set_server_state(WORKERS_BACKEND, node, "maint")
        try:
            yield
        finally:
            for node in others:
                self.runtime.set_server_state(WORKERS_BACKEND, node, "ready")


def sidecar_part(status: dict[str, Any], node: str, part: str) -> dict[str, Any]:
    """One node part's entry in the sidecar's ``/status`` JSON."""
    nodes = status.get("nodes", status)
    entry = nodes[node] if isinstance(nodes, dict) else next(n for n in nodes if n.get("name") == node)
    return entry[part]
