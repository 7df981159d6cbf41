"""A balancer host and two node hosts in network namespaces (``bench.harness.netns``), started from one cluster file.

``HostsCluster`` starts ``launch.py --role balancer`` in namespace ``b`` and ``launch.py --role
node`` in ``n1`` and ``n2`` (a worker and a web front each; the demo model, or the stand-in where the
model is not the subject), all from one cluster file (``cluster_file``), and reads HAProxy's view of
the node parts on the balancer. Losing a host mid-job: ``bench.harness.lost_host`` and
``bench.harness.lost_web_front``.
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.haproxy.names import HOLDING_SERVER, PART_BACKENDS
from balancer.haproxy.process import RuntimeAPI
from balancer.system.run_dir import write_private_file
from bench.harness.netns import NetworkLab
from bench.harness.waiting import wait_until

NODE_HOSTS = {"node1": "n1", "node2": "n2"}
"""Node -> the node host (namespace) that runs it."""
BALANCER = "b"
PUBLIC_PORT = 8080
JOB = {"prompt": "studio portrait, host failover", "steps": 8, "width": 512, "height": 512, "seed": 11}

DEMO_WORKER = ["--model", "demo", "--device", "cpu", "--threads", "1"]
"""The lab workers' flags unless told otherwise."""
STANDIN_WORKER = ["--model", "standin:0.3", "--threads", "1"]
"""For labs whose subject is the cluster, not the model (rolling restarts, TLS between hosts, balancer failover):
the fixed-latency stand-in (``webui.worker.pipelines.standin``, not a model; 0.3 s a job, about the demo model's 2-step
256² job here), whose worker is ready in about a second instead of ten (it imports no torch)."""


def cluster_file(lab: NetworkLab, run_dir: Path, health: dict[str, float], nodes: dict[str, str],
                 worker_args: list[str] = DEMO_WORKER, dispatch_agent: bool = True,
                 jobs: dict[str, object] | None = None) -> Path:
    """One cluster file for all three hosts (each host gets its own --run-dir); ``health``: checks; ``nodes``:
    node -> its node host (a host's second node listens one port above its first); ``dispatch_agent``:
    whether each worker has one (through its host agent); ``jobs``: the jobs section (unset: the defaults)."""
    balancer = lab.address[BALANCER]
    hosts = list(nodes.values())
    rank = {node: hosts[:index].count(host) for index, (node, host) in enumerate(nodes.items())}
    data = {
        "public": {"host": balancer, "port": PUBLIC_PORT},
        "worker_queue": {"host": balancer, "port": 8081},
        "stats": {"password": "hosts-lab"},
        # One secret for every host: the node hosts' web fronts show it to the balancer's plain worker queue.
        "cluster_secret_file": str(write_private_file(run_dir / "cluster-shared.secret", secrets.token_hex(32))),
        "sidecar": {"probe_interval": 0.5, "start_timeout": 240, "stop_grace": 5},
        "limits": {"rate_limit_per_minute": 0, "max_client_connections": 0, "queue_timeout": 120},
        "health": health,
        "node_hosts": [{"name": host, "address": lab.address[host]} for host in dict.fromkeys(hosts)],
        "nodes": [{"name": node, "node_host": host, "web": {"port": 7860 + rank[node]},
                   "worker": {"port": 7870 + rank[node], "args": list(worker_args),
                              **({"dispatch_agent_port": 8870 + rank[node]} if dispatch_agent else {})}}
                  for node, host in nodes.items()],
        **({"jobs": jobs} if jobs is not None else {}),
    }
    path = run_dir / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class HostsCluster:
    """The three hosts, started with ``launch.py`` in their namespaces (stopped with the lab)."""

    def __init__(self, lab: NetworkLab, run_dir: Path, health: dict[str, float],
                 nodes: dict[str, str] | None = None, worker_args: list[str] = DEMO_WORKER,
                 dispatch_agent: bool = True, jobs: dict[str, object] | None = None) -> None:
        self.lab = lab
        self.nodes = dict(nodes or NODE_HOSTS)
        """Node -> the node host that runs it."""
        self.file = cluster_file(lab, run_dir, health, self.nodes, worker_args, dispatch_agent, jobs)
        self.run_dirs = {host: run_dir / host for host in (BALANCER, *dict.fromkeys(self.nodes.values()))}
        self.api = RuntimeAPI(self.run_dirs[BALANCER] / "haproxy.sock")
        self.url = f"http://{lab.address[BALANCER]}:{PUBLIC_PORT}"

    def start(self, timeout: float) -> None:
        """Start every host; wait until the balancer sees every node part UP."""
        for host, run_dir in self.run_dirs.items():
            role = ["--role", "balancer"] if host == BALANCER else ["--role", "node"]
            if host == "n1":
                role += ["--node-host", "n1"]  # n2 finds itself by its address
            self.lab.start(host, ["python", "launch.py", "--cluster", str(self.file), "--run-dir", str(run_dir),
                                  *role], log_name=f"hosts-{host}")
        self.wait_all_up(timeout)

    def worker_urls(self) -> list[str]:
        """Every node's worker, as the test process (on the lab's subnet) reaches it."""
        spec = parse_cluster(load_cluster_file(self.file))
        return [spec.part_url(node, node.worker) for node in spec.workers]  # type: ignore[arg-type]

    def statuses(self) -> dict[str, str]:
        """``backend/server`` -> HAProxy's status, for every node part (none while HAProxy is not up)."""
        try:
            servers = self.api.servers()
        except OSError:
            return {}
        return {f"{s.backend}/{s.server}": s.status for s in servers
                if s.backend in PART_BACKENDS.values() and s.server != HOLDING_SERVER}

    def unsettled(self) -> dict[str, str] | None:
        """``backend/server`` -> its status and check health, for each node part that is not yet UP *and* confirmed
        by HAProxy's own health checks at full health; None while HAProxy does not answer.

        A part the host agent puts back in rotation (leaving maintenance) is UP at once but at the lowest health
        that is still UP, whatever its checks last said: one failed check then takes it out again and (node host
        servers: ``on-marked-down shutdown-sessions``) ends its sessions. Load starts once every part's checks
        have passed enough to take ``fall`` failures."""
        try:
            rows = [row for row in self.api.show_stat() if row.get("pxname") in PART_BACKENDS.values()
                    and row.get("svname") not in ("FRONTEND", "BACKEND", HOLDING_SERVER)]
        except OSError:
            return None
        if len(rows) != 2 * len(self.nodes):
            return {"servers": f"{len(rows)} of {2 * len(self.nodes)} known"}
        return {f"{row['pxname']}/{row['svname']}": f"{row['status']} health {row['check_health']}"
                for row in rows if row["status"] != "UP" or not full_health(row)}

    def wait_all_up(self, timeout: float) -> None:
        """Wait until the balancer's HAProxy has every node part UP at full check health (``unsettled``)."""
        seen: dict[str, dict[str, str] | None] = {}

        def settled() -> bool:
            seen["last"] = self.unsettled()
            return seen["last"] == {}

        try:
            wait_until(settled, "every node part UP at full health on the balancer", timeout, 0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; still waiting for: {seen.get('last')}") from None

    def busy_worker(self) -> str | None:
        """The node whose worker runs a job now, if any."""
        busy = [s.server for s in self.api.servers("workers") if s.current_sessions > 0]
        return busy[0] if busy else None

    def generate(self, **fields: object) -> httpx.Response:
        """One REST job through the balancer's public frontend."""
        return httpx.post(f"{self.url}/generate", json={**JOB, **fields}, timeout=300)

    def baseline(self, count: int = 3) -> float:
        """Seconds one job takes with nothing wrong (the median of ``count``, one at a time)."""
        durations = []
        for index in range(count):
            started = time.monotonic()
            self.generate(seed=100 + index).raise_for_status()
            durations.append(time.monotonic() - started)
        return statistics.median(durations)


def full_health(row: dict[str, str]) -> bool:
    """Whether a ``show stat`` server row's health checks are at their top (``rise + fall - 1``): ``fall`` failed
    checks in a row are needed to mark it DOWN."""
    try:
        return int(row["check_health"]) == int(row["check_rise"]) + int(row["check_fall"]) - 1
    except (KeyError, ValueError):
        return False


def with_tls(cluster_file: Path, certs: Path, balancer: str, nodes: dict[str, str]) -> None:
    """Issue one run's certificates into ``certs`` (``balancer.multihost.certs``: the cluster CA, ``balancer``'s as
    ``NAME=ADDRESS[,ADDRESS...]``, one per node host ``NAME -> ADDRESS``, each found as NAME.pem beside ca.crt) and
    turn ``tls`` on in ``cluster_file`` with them. The connect timeout covers the TLS handshake, which a busy node's
    event loop may answer late on the shared 2-core test machine (one failed connect marks a server down)."""
    nodes_args = [arg for host, address in nodes.items() for arg in ("--node", f"{host}={address}")]
    issued = subprocess.run([sys.executable, "-m", "balancer.multihost.certs", "--out", str(certs), "--balancer",
                             balancer, *nodes_args], capture_output=True, text=True, timeout=60)
    assert issued.returncode == 0, issued.stderr
    data = yaml.safe_load(cluster_file.read_text())
    data["tls"] = {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / f"{balancer.partition('=')[0]}.pem")}
    data["limits"]["connect_timeout"] = 10
    cluster_file.write_text(yaml.safe_dump(data))
