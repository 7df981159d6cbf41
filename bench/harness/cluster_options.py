"""What ``LaunchedCluster`` starts: ``ClusterOptions``, and the cluster file it writes for ``launch.py``.

``ClusterOptions.cluster_data`` is the cluster file's contents (the ``ClusterSpec`` format of
``balancer/config/cluster_fields.py``) with a free loopback port for every listener and node part;
``cluster_file_data`` is a validated spec as the file ``launch.py`` reads, for this tree or another.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancer.config.cluster import ClusterSpec
from bench.harness.processes import REPO, free_port


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
    dispatch_agent_interval: float | None = None
    """Seconds between HAProxy's polls of each dispatch agent (``health.dispatch_agent_interval``); unset: the
    cluster file's default. Keys of a ``health`` section in ``extra`` win."""
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

    def cluster_data(self, run_dir: Path) -> dict[str, Any]:
        """The cluster file's contents: free ports everywhere, stats password known to us."""
        nodes = []
        for index in range(self.nodes):
            name = f"node{index + 1}"
            nodes.append({
                "name": name,
                **({"web": {"port": free_port(), "args": list(self.web_args)}} if self.webs else {}),
                "worker": {"port": free_port(), "args": self.worker_flags(),
                           "env": {**self.worker_env, **self.node_worker_env.get(name, {})},
                           "standby": self.standby,
                           **({"dispatch_agent_port": free_port()} if self.dispatch_agent else {})},
            })
        for name, args in self.worker_only_nodes.items():
            nodes.append({"name": name, "worker": {"port": free_port(), "args": list(args)}})
        return {
            "public": {"port": free_port()},
            "worker_queue": {"port": free_port()},
            "stats": {"port": free_port(), "password": "bench-stats"},
            "sidecar": {"port": free_port(), **self.sidecar},
            "run_dir": str(run_dir),
            "nodes": nodes,
            **self.extra,
            "jobs": {"port": free_port(), **self.extra.get("jobs", {})},
            **({"health": health} if (health := self.health()) else {}),
        }

    def health(self) -> dict[str, Any]:
        """The cluster file's ``health`` section: ``extra``'s, over ``dispatch_agent_interval`` if set."""
        interval = self.dispatch_agent_interval
        return {**({} if interval is None else {"dispatch_agent_interval": interval}), **self.extra.get("health", {})}


def cluster_file_data(spec: ClusterSpec, tree: Path = REPO) -> dict[str, Any]:
    """The validated spec as plain data for the cluster file (ports fixed at construction); for another
    tree, only what differs from this tree's defaults (settings it may not know are left out)."""
    data = spec.model_dump(mode="json", exclude_defaults=tree != REPO)
    data["stats"]["password"] = spec.stats.password.get_secret_value()
    if tree != REPO and not any("class JobsSpec" in module.read_text()
                                for module in (tree / "balancer/config").glob("*.py")):
        data.pop("jobs", None)  # a tree from before the jobs service: it knows no such section
    return data
