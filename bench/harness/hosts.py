"""A balancer host and two node hosts in network namespaces (``bench.harness.netns``), and lost hosts.

``HostsCluster`` starts ``launch.py --role balancer`` in namespace ``b`` and ``launch.py --role
node`` in ``n1`` and ``n2`` (a worker and a web front each; the demo model, or the stand-in where the
model is not the subject), all from one cluster file.
``lose_host_mid_job`` breaks the node host that runs a REST job (``FAULTS``: link down, packets
dropped, every process frozen) and measures what that cost; ``tests/test_hosts.py`` checks the
outcome, ``bench/hosts.py`` tabulates it.
"""

from __future__ import annotations

import secrets
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import yaml

from balancer.config.loading import load_cluster_file, parse_cluster
from balancer.haproxy.process import RuntimeAPI, status_is_out
from balancer.system.run_dir import write_private_file
from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import CallFailed, Job, Reply
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.netns import NetworkLab
from bench.harness.waiting import wait_until

NODE_HOSTS = {"node1": "n1", "node2": "n2"}
"""Node -> the node host (namespace) that runs it."""
BALANCER = "b"
PUBLIC_PORT = 8080
JOB = {"prompt": "studio portrait, host failover", "steps": 8, "width": 512, "height": 512, "seed": 11}

FAULTS: dict[str, tuple[Callable[[NetworkLab, str], object], Callable[[NetworkLab, str], object]]] = {
    "link-down": (lambda lab, host: lab.set_link(host, False), lambda lab, host: lab.set_link(host, True)),
    "packets-dropped": (lambda lab, host: lab.drop_packets(host, True),
                        lambda lab, host: lab.drop_packets(host, False)),
    "frozen": (lambda lab, host: lab.signal_host(host, signal.SIGSTOP),
               lambda lab, host: lab.signal_host(host, signal.SIGCONT)),
}
"""Fault name -> (break the host, heal it)."""


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
        return {f"{s.backend}/{s.server}": s.status for s in servers if s.backend in ("webs", "workers")}

    def unsettled(self) -> dict[str, str] | None:
        """``backend/server`` -> its status and check health, for each node part that is not yet UP *and* confirmed
        by HAProxy's own health checks at full health; None while HAProxy does not answer.

        A part the host agent puts back in rotation (leaving maintenance) is UP at once but at the lowest health
        that is still UP, whatever its checks last said: one failed check then takes it out again and (node host
        servers: ``on-marked-down shutdown-sessions``) ends its sessions. Load starts once every part's checks
        have passed enough to take ``fall`` failures."""
        try:
            rows = [row for row in self.api.show_stat() if row.get("pxname") in ("webs", "workers")
                    and row.get("svname") not in ("FRONTEND", "BACKEND")]
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


@dataclass
class LostHost:
    """What losing a node host mid-job cost."""

    fault: str
    lost_node: str
    response: httpx.Response | Exception
    job_s: float
    """The whole job, as its client saw it."""
    fault_into_job_s: float
    out_after_s: float
    """From the fault until HAProxy had the lost worker out of rotation (new jobs avoid it)."""
    back_after_heal_s: float

    @property
    def replay_s(self) -> float | None:
        """How long the job took on the worker that answered it (its own timings); None without an image."""
        if not isinstance(self.response, httpx.Response) or self.response.status_code != 200:
            return None
        return self.response.json()["timings"]["total_ms"] / 1000

    def figures(self) -> dict[str, object]:
        """The measured seconds, rounded. ``extra_s``: the job's time beyond its run on the worker that
        answered (what the same job cost at that moment without a fault; on a shared CPU that varies
        too much for a fixed baseline); ``overhead_s``: that, less the work lost on the broken host
        (the time from the job's start to the fault)."""
        replay = self.replay_s
        extra = None if replay is None else self.job_s - replay
        return {"lost_node": self.lost_node, "job_s": round(self.job_s, 2),
                "replay_s": None if replay is None else round(replay, 2),
                "extra_s": None if extra is None else round(extra, 2),
                "overhead_s": None if extra is None else round(extra - self.fault_into_job_s, 2),
                "fault_into_job_s": round(self.fault_into_job_s, 2),
                "out_of_rotation_after_s": round(self.out_after_s, 2),
                "back_after_heal_s": round(self.back_after_heal_s, 2)}

    @property
    def survivor(self) -> str:
        """The node that should have finished the job."""
        return next(node for node in NODE_HOSTS if node != self.lost_node)


def lose_host_mid_job(cluster: HostsCluster, fault: str, into_job: float) -> LostHost:
    """Send one job, break the host running it ``into_job`` seconds later, heal it once the job ended."""
    cluster.wait_all_up(timeout=60)
    answer: dict[str, object] = {}

    def client() -> None:
        try:
            answer["response"] = cluster.generate()
        except httpx.HTTPError as exc:
            answer["response"] = exc
        answer["ended"] = time.monotonic()

    job = threading.Thread(target=client)
    started = time.monotonic()
    job.start()
    lost_node = wait_until(cluster.busy_worker, "the job running on a worker", 30, 0.01)
    lost_host = NODE_HOSTS[lost_node]
    time.sleep(max(0.0, started + into_job - time.monotonic()))
    break_host, heal_host = FAULTS[fault]
    faulted = time.monotonic()
    break_host(cluster.lab, lost_host)
    try:
        wait_until(lambda: status_is_out(cluster.statuses()[f"workers/{lost_node}"]), "lost worker out", 60, 0.02)
        out = time.monotonic()
        job.join(timeout=240)
    finally:
        heal_host(cluster.lab, lost_host)
    healed = time.monotonic()
    cluster.wait_all_up(timeout=60)
    return LostHost(fault=fault, lost_node=lost_node, response=answer.get("response", TimeoutError("no answer")),
                    job_s=float(answer.get("ended", healed)) - started, fault_into_job_s=faulted - started,
                    out_after_s=out - faulted, back_after_heal_s=time.monotonic() - healed)


UI_CLIENTS = ("gradio_client", "browser")
"""UI clients whose sticky web front is lost (``lose_web_front_mid_job``)."""
UI_JOB = Job(prompt="studio portrait, lost web front", steps=8, width=512, height=512, seed=21)


@dataclass
class Attempt:
    """One try of a UI job: when it ended (seconds since the first was sent) and how."""

    ended_s: float
    outcome: str


@dataclass
class LostWebFront:
    """What losing the node host of a UI client's sticky web front mid-job cost that client."""

    fault: str
    client: str
    web_node: str
    """The client's web front before the fault (its cookie)."""
    normal_s: float
    """The same client's job just before, with nothing wrong."""
    fault_into_job_s: float
    attempts: list[Attempt]
    reply: Reply | None
    """The image, from the try that got one (None: none did within the budget)."""

    @property
    def job_s(self) -> float:
        """From the first send until the image (or the last try)."""
        return self.attempts[-1].ended_s if self.attempts else 0.0

    def figures(self) -> dict[str, object]:
        """The measured seconds, rounded. ``extra_s``: the job (with its resends) beyond a normal one;
        ``resend_after_s``: when the first try failed, from the fault (None: it did not fail)."""
        first_failed = self.attempts[0] if self.attempts and self.attempts[0].outcome != "ok" else None
        return {"client": self.client, "web_node": self.web_node, "finished": self.reply is not None,
                "tries": len(self.attempts), "job_s": round(self.job_s, 2), "normal_s": round(self.normal_s, 2),
                "extra_s": round(self.job_s - self.normal_s, 2), "fault_into_job_s": round(self.fault_into_job_s, 2),
                "resend_after_s": round(first_failed.ended_s - self.fault_into_job_s, 2) if first_failed else None,
                "first_try": self.attempts[0].outcome if self.attempts else None,
                "answered_by_web_node": self.reply.web_node if self.reply else None}


def ui_client(kind: str, url: str) -> GradioApiClient | BrowserProtocolClient:
    """A reused ``gradio_client`` or a browser tab (page loaded) through the balancer at ``url``."""
    if kind == "gradio_client":
        return GradioApiClient(url + "/")
    tab = BrowserProtocolClient(url)
    tab.open()
    return tab


def resend_until_done(client: GradioApiClient | BrowserProtocolClient, job: Job, started: float, budget: float,
                      attempts: list[Attempt]) -> Reply | None:
    """What a user does when a job fails: send it again (same client, same page), until an image or ``budget`` s."""
    while time.monotonic() - started < budget:
        try:
            reply = client.generate(job)
        except CallFailed as exc:
            attempts.append(Attempt(time.monotonic() - started, str(exc)[:200]))
            time.sleep(0.2)
            continue
        attempts.append(Attempt(time.monotonic() - started, "ok"))
        return reply
    return None


def lose_web_front_mid_job(cluster: HostsCluster, fault: str, kind: str, into_job: float,
                           budget: float = 120.0) -> LostWebFront:
    """A UI client (``kind``) runs a job; ``into_job`` s into its next one, its web front's node host breaks; it
    resends until it gets an image; the host is healed once it did."""
    cluster.wait_all_up(timeout=60)
    client = ui_client(kind, cluster.url)
    try:
        warm = time.monotonic()
        web_node = client.generate(UI_JOB).web_node
        normal_s = time.monotonic() - warm
        if web_node not in NODE_HOSTS:
            raise RuntimeError(f"the {kind} client's job names no known web front: {web_node!r}")
        lost_host = NODE_HOSTS[web_node]
        attempts: list[Attempt] = []
        answer: dict[str, Reply | None] = {}
        started = time.monotonic()
        job = threading.Thread(target=lambda: answer.update(
            reply=resend_until_done(client, replace(UI_JOB, seed=UI_JOB.seed + 1), started, budget, attempts)))
        job.start()
        wait_until(cluster.busy_worker, "the UI job running on a worker", 30, 0.01)
        time.sleep(max(0.0, started + into_job - time.monotonic()))
        break_host, heal_host = FAULTS[fault]
        faulted = time.monotonic()
        break_host(cluster.lab, lost_host)
        try:
            job.join(timeout=budget + 30)
        finally:
            heal_host(cluster.lab, lost_host)
        cluster.wait_all_up(timeout=60)
    finally:
        client.close()
    return LostWebFront(fault=fault, client=kind, web_node=web_node, normal_s=normal_s,
                        fault_into_job_s=faulted - started, attempts=attempts, reply=answer.get("reply"))
