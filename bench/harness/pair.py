"""Two balancer hosts sharing a floating address (keepalived), two node hosts, and a lost balancer.

``PairCluster`` extends the node-hosts lab (``bench.harness.hosts_cluster``): namespaces ``b`` and ``b2``
each run ``launch.py --role balancer`` (HAProxy, its sidecar and keepalived) from one cluster file
whose ``public`` and ``worker_queue`` listen on the floating address; ``n1`` and ``n2`` run the
nodes. ``Retrying`` is the client's documented answer to a lost balancer: a request whose
connection failed or died is sent again, up to a time limit. ``lose_balancer_mid_load`` kills the
balancer holding the address while a browser-style client loads pages and a REST job runs, and
measures what that cost; ``tests/test_pair.py`` checks the outcome, ``bench/pair.py`` tabulates it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml

from balancer.cli.ctl import DEFAULT_SIDECAR
from balancer.haproxy.config import COOKIE_NAME
from balancer.haproxy.process import RuntimeAPI
from bench.harness.hosts_cluster import BALANCER, DEMO_WORKER, JOB, NODE_HOSTS, PUBLIC_PORT, HostsCluster
from bench.harness.netns import NetworkLab
from bench.harness.waiting import wait_until

BALANCERS = {"lb1": BALANCER, "lb2": "b2"}
"""Balancer name -> the host (namespace) that runs it; lb1 has the higher priority."""
LAB_HOSTS = [*BALANCERS.values(), *NODE_HOSTS.values()]
FLOATING_HOST = 100
"""The floating address's last byte in the lab subnet."""
SESSION_HASHES = [f"pair-session-{index}" for index in range(12)]
"""Gradio session hashes whose web front is compared on both balancers."""


def pair_cluster_data(lab: NetworkLab, base: Path, advert_interval: float) -> dict:
    """The node-hosts cluster file ``base`` with two balancers sharing a floating address."""
    data = yaml.safe_load(base.read_text())
    floating = f"{lab.subnet}.{FLOATING_HOST}"
    data["public"]["host"] = data["worker_queue"]["host"] = floating
    data["floating"] = {"address": floating, "interface": "eth0", "advert_interval": advert_interval,
                        "check_interval": 1}
    data["balancers"] = [{"name": name, "address": lab.address[host], "priority": 150 - 50 * index}
                         for index, (name, host) in enumerate(BALANCERS.items())]
    return data


class PairCluster(HostsCluster):
    """Two balancers, one floating address, two node hosts: started with ``launch.py`` in their namespaces."""

    def __init__(self, lab: NetworkLab, run_dir: Path, health: dict[str, float], advert_interval: float,
                 worker_args: list[str] = DEMO_WORKER, jobs: dict[str, object] | None = None) -> None:
        """``jobs``: the cluster file's jobs section (e.g. a shared PostgreSQL ``store_url``; unset: defaults)."""
        super().__init__(lab, run_dir, health, worker_args=worker_args, jobs=jobs)
        data = pair_cluster_data(lab, self.file, advert_interval)
        self.file.write_text(yaml.safe_dump(data))
        self.floating = data["floating"]["address"]
        self.url = f"http://{self.floating}:{PUBLIC_PORT}"
        self.run_dirs[BALANCERS["lb2"]] = run_dir / BALANCERS["lb2"]
        self.apis = {host: RuntimeAPI(self.run_dirs[host] / "haproxy.sock") for host in BALANCERS.values()}

    def start(self, timeout: float) -> None:
        """Start every host (HAProxy may bind the floating address before holding it); wait until both
        balancers see every node part UP and one of them holds the address."""
        for name, host in BALANCERS.items():
            self.lab.sysctl(host, "net.ipv4.ip_nonlocal_bind", "1")
            self._launch(host, ["--role", "balancer", "--balancer", name])
        for host in NODE_HOSTS.values():
            self._launch(host, ["--role", "node", "--node-host", host])
        for host in BALANCERS.values():
            self.api = self.apis[host]
            self.wait_all_up(timeout)
        self.api = self.apis[wait_until(self.holder, "a balancer holding the floating address", 30, 0.1)]

    def _launch(self, host: str, role: list[str]) -> None:
        self.lab.start(host, ["python", "launch.py", "--cluster", str(self.file), "--run-dir",
                              str(self.run_dirs[host]), *role], log_name=f"pair-{host}")

    def holder(self) -> str | None:
        """The balancer host that has the floating address now (None: none; both: an error)."""
        holders = [host for host in BALANCERS.values() if self.lab.has_address(host, self.floating)]
        if len(holders) > 1:
            raise AssertionError(f"both balancers hold {self.floating}: {holders}")
        return holders[0] if holders else None

    def ctl_status(self, host: str, *flags: str) -> str:
        """``python -m balancer.cli status`` run on balancer ``host`` (its sidecar listens on its loopback)."""
        return self.lab.run_in(host, [sys.executable, "-m", "balancer.cli", "status", *flags])

    def vrrp_state(self, host: str) -> str | None:
        """Balancer ``host``'s VRRP state, as its sidecar's ``/status`` shows it (through ``ctl status --json``)."""
        return (json.loads(self.ctl_status(host, "--json")).get("floating") or {}).get("state")

    def sidecar_metrics(self, host: str) -> str:
        """Balancer ``host``'s sidecar ``/metrics`` text."""
        fetch = "import sys, httpx; print(httpx.get(sys.argv[1], timeout=5).raise_for_status().text)"
        return self.lab.run_in(host, [sys.executable, "-c", fetch, f"{DEFAULT_SIDECAR}/metrics"])

    def kill_balancer(self, host: str, timeout: float = 10.0) -> None:
        """The balancer host dies: every process of it SIGKILLed (their sockets close: clients see the
        connections end), then its link goes down (it leaves the network, address and all). All are
        SIGSTOPped first: none runs a handler (a parent-death SIGTERM would let keepalived hand the address
        over gracefully, faster than a crash)."""
        self.lab.signal_host(host, signal.SIGSTOP)
        pids = self.lab.signal_host(host, signal.SIGKILL)
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        psutil.wait_procs(procs, timeout=timeout)
        self.lab.set_link(host, False)


def session_hash_nodes(url: str, hashes: list[str]) -> dict[str, str | None]:
    """For each Gradio session hash, the web front a cookie-less request with it is routed to (the node
    HAProxy names in the cookie it inserts)."""
    found = {}
    for value in hashes:
        response = httpx.get(f"{url}/", params={"session_hash": value}, timeout=10)
        response.raise_for_status()
        found[value] = response.cookies.get(COOKIE_NAME)
    return found


@dataclass
class Outcome:
    """One request as the retrying client saw it."""

    started: float
    seconds: float
    attempts: int
    ok: bool
    detail: str = ""


@dataclass
class Retrying:
    """The client's retry policy for a lost balancer: a request whose connection failed, timed out or died
    before an answer is sent again after ``pause``, until ``budget`` seconds passed."""

    client: httpx.Client
    budget: float = 20.0
    pause: float = 0.1
    outcomes: list[Outcome] = field(default_factory=list)

    def request(self, method: str, path: str, check: Callable[[httpx.Response], bool] = lambda r: r.is_success,
                **kwargs: object) -> httpx.Response | None:
        """Send until an answer passes ``check``; the answer (None if the budget ran out)."""
        started = time.monotonic()
        attempts, detail = 0, ""
        while time.monotonic() - started < self.budget:
            attempts += 1
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:  # refused, timed out, reset, closed before the answer
                detail = type(exc).__name__
                time.sleep(self.pause)
                continue
            if check(response):
                self.outcomes.append(Outcome(started, time.monotonic() - started, attempts, True))
                return response
            detail = f"HTTP {response.status_code}"
            time.sleep(self.pause)
        self.outcomes.append(Outcome(started, time.monotonic() - started, attempts, False, detail))
        return None


@dataclass
class LostBalancer:
    """What killing the balancer that held the floating address cost, and where sessions went."""

    killed: str
    moved_to: str
    moved_s: float
    """From the kill until the address was on the other balancer's (up) link."""
    killed_at: float
    browser: Retrying
    web_front: str | None
    """The browser's web front (its cookie) before the kill."""
    fronts_seen: set[str | None]
    """Its cookie after each page load, until the end."""
    rest: Retrying
    job: httpx.Response | None
    routed_before: dict[str, str | None]
    routed_after: dict[str, str | None]

    def figures(self) -> dict[str, object]:
        """The measured seconds and counts, rounded. ``page_gap_s``: the longest time without a page loaded
        (the outage as the browser saw it); ``page_most_extra_s``: the slowest page load that ended after the
        kill, beyond a normal one (the median before the kill)."""
        pages = self.browser.outcomes
        normal = statistics.median(o.seconds for o in pages if o.started + o.seconds < self.killed_at)
        after = [o for o in pages if o.started + o.seconds >= self.killed_at]
        answered = sorted(o.started + o.seconds for o in pages if o.ok)
        rest = self.rest.outcomes[0] if self.rest.outcomes else None
        return {
            "address_moved_after_s": round(self.moved_s, 2),
            "page_gap_s": round(max(b - a for a, b in zip(answered, answered[1:], strict=False)), 2),
            "page_requests": len(pages), "page_requests_failed": sum(not o.ok for o in pages),
            "page_requests_retried": sum(o.attempts > 1 for o in pages), "page_normal_s": round(normal, 3),
            "page_most_extra_s": round(max(o.seconds for o in after) - normal, 2) if after else None,
            "rest_job_attempts": rest.attempts if rest else None,
            "rest_job_s": round(rest.seconds, 2) if rest else None,
            "web_front": self.web_front, "web_front_kept": self.fronts_seen == {self.web_front},
            "session_hashes_same_front": sum(self.routed_before[h] == self.routed_after.get(h)
                                             for h in self.routed_before),
            "session_hashes": len(self.routed_before),
            "session_hash_fronts": sorted({str(node) for node in self.routed_before.values()}),
        }


def lose_balancer_mid_load(cluster: PairCluster, settle: float = 2.0) -> LostBalancer:
    """Page loads every 0.1 s and one REST job through the floating address; once the job runs, kill the
    balancer holding the address; keep loading pages ``settle`` s after the job ended."""
    holder = cluster.holder()
    assert holder is not None, "no balancer holds the floating address"
    routed_before = session_hash_nodes(cluster.url, SESSION_HASHES)
    browser = Retrying(httpx.Client(base_url=cluster.url, timeout=httpx.Timeout(5, connect=1)))
    if browser.request("GET", "/") is None:
        raise RuntimeError(f"the page does not load through {cluster.url}")
    web_front = browser.client.cookies.get(COOKIE_NAME)
    fronts_seen: set[str | None] = set()
    stop = threading.Event()

    def browse() -> None:
        while not stop.is_set():
            browser.request("GET", "/")
            fronts_seen.add(browser.client.cookies.get(COOKIE_NAME))
            stop.wait(0.1)

    rest = Retrying(httpx.Client(base_url=cluster.url, timeout=httpx.Timeout(120, connect=1)), budget=180)
    job: dict[str, httpx.Response | None] = {}
    threads = [threading.Thread(target=browse),
               threading.Thread(target=lambda: job.update(answer=rest.request("POST", "/generate", json=JOB)))]
    try:
        for thread in threads:
            thread.start()
        wait_until(cluster.busy_worker, "the REST job running on a worker", 30, 0.01)
        killed_at = time.monotonic()
        cluster.kill_balancer(holder)
        moved_to = wait_until(cluster.holder, "the floating address on the other balancer", 20, 0.02)
        moved_s = time.monotonic() - killed_at
        threads[1].join(timeout=200)
        time.sleep(settle)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=200)
    return LostBalancer(killed=holder, moved_to=moved_to, moved_s=moved_s, killed_at=killed_at, browser=browser,
                        web_front=web_front, fronts_seen=fronts_seen, rest=rest, job=job.get("answer"),
                        routed_before=routed_before, routed_after=session_hash_nodes(cluster.url, SESSION_HASHES))
