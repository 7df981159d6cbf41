"""Two balancer hosts sharing a floating address (keepalived), two node hosts, and a lost balancer.

``PairCluster`` extends the node-hosts lab (``bench.harness.hosts``): namespaces ``b`` and ``b2``
each run ``launch.py --role balancer`` (HAProxy, its sidecar and keepalived) from one cluster file
whose ``public`` and ``worker_queue`` listen on the floating address; ``n1`` and ``n2`` run the
nodes. ``Retrying`` is the client's documented answer to a lost balancer: a request whose
connection failed or died is sent again, up to a time limit.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml

from balancer.haproxy import RuntimeAPI
from balancer.haproxy_config import COOKIE_NAME
from bench.harness.hosts import BALANCER, NODE_HOSTS, PUBLIC_PORT, HostsCluster
from bench.harness.netns import NetworkLab
from bench.harness.waiting import wait_until

BALANCERS = {"lb1": BALANCER, "lb2": "b2"}
"""Balancer name -> the host (namespace) that runs it; lb1 has the higher priority."""
LAB_HOSTS = [*BALANCERS.values(), *NODE_HOSTS.values()]
FLOATING_HOST = 100
"""The floating address's last byte in the lab subnet."""


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

    def __init__(self, lab: NetworkLab, run_dir: Path, health: dict[str, float], advert_interval: float) -> None:
        super().__init__(lab, run_dir, health)
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

    def kill_balancer(self, host: str, timeout: float = 10.0) -> None:
        """The balancer host dies: every process of it SIGKILLed (their sockets close: clients see the
        connections end), then its link goes down (it leaves the network, address and all)."""
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
