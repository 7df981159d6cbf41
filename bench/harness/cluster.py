"""A whole portrait-ha cluster for a benchmark or a test: ``launch.py`` on free loopback ports.

``LaunchedCluster`` writes a cluster file (the ``ClusterSpec`` format of
``balancer/config/cluster_fields.py``) with a free port for every listener and node part, starts
``python launch.py`` on it through ``bench.harness.processes.Processes`` (so the whole
process tree is killed by PID when the block ends, on errors and Ctrl-C too), and waits until
HAProxy shows every node part UP. It then answers what benchmarks and tests ask: HAProxy's
view of each server (runtime API), the sidecar's ``/status``, the PID of a node's worker or
web front, and "is everything ready again?".
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from balancer.config.cluster import ClusterSpec
from balancer.config.loading import parse_cluster
from balancer.haproxy.config import PART_BACKENDS, WORKERS_BACKEND
from balancer.haproxy.names import JOBS_BACKEND, JOBS_SERVER
from balancer.haproxy.process import RuntimeAPI, ServerStatus, status_is_up
from balancer.system.cluster_secret import read_cluster_secret
from bench.harness.processes import REPO, TEARDOWN_GRACE, Processes, free_port
from bench.harness.waiting import wait_http, wait_until
from webui.contract import CLUSTER_SECRET_HEADER
from webui.settings import default_cache_dir

logger = logging.getLogger(__name__)



@dataclass
class ClusterOptions:
    """What cluster to start: model, node count, threads and extra flags per node part."""

    model: str = "demo"
    lora: str = "auto"
    nodes: int = 2
    webs: bool = True
    """Give each node a web front; without (a test of REST and workers only) every node is a worker only, and a
    cluster starts two Gradio apps fewer (the costliest part to start)."""
    threads: int = 1
    start_timeout: float = 300.0
    worker_args: list[str] = field(default_factory=list)
    web_args: list[str] = field(default_factory=list)
    worker_env: dict[str, str] = field(default_factory=dict)
    dispatch_agent: bool = True
    """Give each worker a dispatch agent port (the next job comes while a result is encoded)."""
    node_worker_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Node name -> environment for that node's worker only, over ``worker_env`` (a fault on one worker)."""
    sidecar: dict[str, Any] = field(default_factory=dict)
    """Extra sidecar settings for the cluster file (probe interval, backoff, OOM counter file, ...)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extra top-level cluster-file sections (``limits``, ...)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of ``launch.py`` (and so of every part), e.g. ``PORTRAIT_JOBS_LEASE_SECONDS``."""
    standby: bool = False
    """Every node's worker with a warm standby (``standby: true``, ``balancer.supervision.standby``)."""
    worker_only_nodes: dict[str, list[str]] = field(default_factory=dict)
    """Node name -> worker flags of extra nodes with a worker only (no ``--threads`` etc. added).

    They are not waited for and not in ``node_names``: a test can give one a model that does not
    exist, to watch it crash-loop.
    """

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The flags every benchmark shares."""
        parser.add_argument("--model", default="demo",
                            help="Model of every worker: demo (offline), awportrait-z, sdxl, a hub id or a directory.")
        parser.add_argument("--lora", default="auto", help="LoRA of every worker ('auto': the model's own).")
        parser.add_argument("--nodes", type=int, default=2, help="Nodes (web front + worker) to start.")
        parser.add_argument("--threads", type=int, default=1,
                            help="torch threads per worker; 0 = torch's default (use 0 on a GPU machine).")
        parser.add_argument("--start-timeout", type=float, default=300.0,
                            help="Seconds the cluster may take to become ready (model download and load).")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **extra: Any) -> ClusterOptions:
        """Options from parsed ``add_arguments`` flags (plus keyword overrides)."""
        return cls(model=args.model, lora=args.lora, nodes=args.nodes, threads=args.threads,
                   start_timeout=args.start_timeout, **extra)

    def worker_flags(self) -> list[str]:
        """Command-line flags every worker gets."""
        flags = ["--model", self.model, "--lora", self.lora, *self.worker_args]
        if self.threads:
            flags += ["--threads", str(self.threads)]
        return flags


class LaunchedCluster:
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
        self.spec: ClusterSpec = parse_cluster(self.describe())
        self.runtime = RuntimeAPI(self.spec.socket_path)
        self.proc = None

    # ------------------------------------------------------------------ set-up
    def describe(self) -> dict[str, Any]:
        """The cluster file's contents: free ports everywhere, stats password known to us."""
        opts = self.options
        nodes = []
        for index in range(opts.nodes):
            name = f"node{index + 1}"
            nodes.append({
                "name": name,
                **({"web": {"port": free_port(), "args": list(opts.web_args)}} if opts.webs else {}),
                "worker": {"port": free_port(), "args": opts.worker_flags(),
                           "env": {**opts.worker_env, **opts.node_worker_env.get(name, {})},
                           "standby": opts.standby,
                           **({"dispatch_agent_port": free_port()} if opts.dispatch_agent else {})},
            })
        for name, args in opts.worker_only_nodes.items():
            nodes.append({"name": name, "worker": {"port": free_port(), "args": list(args)}})
        return {
            "public": {"port": free_port()},
            "worker_queue": {"port": free_port()},
            "stats": {"port": free_port(), "password": "bench-stats"},
            "sidecar": {"port": free_port(), **opts.sidecar},
            "run_dir": str(self.run_dir),
            "nodes": nodes,
            **opts.extra,
            "jobs": {"port": free_port(), **opts.extra.get("jobs", {})},
        }

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
        config.write_text(yaml.safe_dump(self.describe_for_file()), encoding="utf-8")
        env = {"PYTHONUNBUFFERED": "1", **self.options.env}
        self.proc = self.processes.start(["python", "launch.py", "--cluster", str(config)], env=env,
                                         log_name=f"{self.name}-launch", cwd=self.tree)
        logger.info("cluster %s starting (log: %s)", self.name, self.proc.log_path)
        return self

    def describe_for_file(self) -> dict[str, Any]:
        """The validated spec as plain data for the cluster file (ports fixed at construction); for another
        tree, only what differs from this tree's defaults (settings it may not know are left out)."""
        data = self.spec.model_dump(mode="json", exclude_defaults=self.tree != REPO)
        data["stats"]["password"] = self.spec.stats.password.get_secret_value()
        if self.tree != REPO and not any("class JobsSpec" in module.read_text()
                                         for module in (self.tree / "balancer/config").glob("*.py")):
            data.pop("jobs", None)  # a tree from before the jobs service: it knows no such section
        return data

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

    def status(self) -> dict[str, Any]:
        """The sidecar's ``/status`` JSON."""
        return httpx.get(f"{self.sidecar_url}/status", timeout=5).raise_for_status().json()

    def part_status(self, node: str, part: str) -> dict[str, Any]:
        """The sidecar's entry for one node part (state, pid, restarts, last cause, ...)."""
        return sidecar_part(self.status(), node, part)

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

    def process_tree(self) -> list[psutil.Process]:
        """launch.py and every process below it (HAProxy, sidecar, node parts)."""
        if self.proc is None:
            return []
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

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
