"""Helpers shared by the balancer tests: cluster descriptions on free ports, stand-in nodes, waiting."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from balancer.haproxy.process import RuntimeAPI
from bench.harness.balancer import STATS_PASSWORD, cluster_data
from bench.harness.processes import Processes, free_port
from bench.harness.waiting import wait_http, wait_until

__all__ = ["STATS_PASSWORD", "cluster_data"]  # the harness's, named here too for the tests that import them
T = TypeVar("T")


def fake_command(name: str, port: int, *extra: str) -> list[str]:
    """Command line of a stand-in node process (``tests.fake_node``) answering as ``name``."""
    return [sys.executable, "-m", "tests.fake_node", "--name", name, "--port", str(port), *extra]


def stand_in_node(name: str, parts: tuple[str, ...] = ("web", "worker"), *extra: str) -> dict:
    """A managed node of stand-in processes on free ports (``extra``: more flags for each)."""
    ports = {part: free_port() for part in parts}
    return {"name": name, **{part: {"port": port, "command": fake_command(f"{name}-{part}", port, *extra)}
                             for part, port in ports.items()}}


def start_fake(processes: Processes, name: str, port: int, delay: float = 0.0) -> subprocess.Popen:
    """Start a stand-in node process and wait until it answers."""
    proc = processes.start(fake_command(name, port, "--delay", str(delay)), log_name=f"fake-{name}")
    wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=30)
    return proc


def wait_status(api: RuntimeAPI, backend: str, server: str, prefix: str, timeout: float = 15.0) -> float:
    """Seconds until HAProxy reports ``backend/server`` with a status starting with ``prefix``."""
    start = time.monotonic()
    wait_until(lambda: api.server(backend, server).status.startswith(prefix), f"{backend}/{server} {prefix}", timeout)
    return time.monotonic() - start


def wait_all_up(api: RuntimeAPI, timeout: float = 15.0) -> None:
    """Wait until HAProxy reports every server UP."""
    wait_until(lambda: (servers := api.servers()) and all(server.is_up for server in servers), "all servers UP",
               timeout)


def requests_received(api: RuntimeAPI, backend: str) -> int:
    """Requests a backend has received so far, queued ones included (HAProxy's stot; only grows)."""
    row = next(row for row in api.show_stat() if row["pxname"] == backend and row["svname"] == "BACKEND")
    return int(row["stot"] or 0)


def run_in_threads(calls: list[Callable[[], T]], after_start: Callable[[int], object],
                   timeout: float = 120) -> list[tuple[float, T | Exception]]:
    """Run each call in its own thread, ``after_start(index)`` after starting each one.

    Returns (end time, result or exception) for each call, in call order.
    """
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            value = calls[index]()
        except Exception as exc:  # handed to the caller's assertions
            value = exc
        results[index] = (time.monotonic(), value)

    threads = []
    for index in range(len(calls)):
        thread = threading.Thread(target=run, args=(index,))
        thread.start()
        threads.append(thread)
        after_start(index)
    for thread in threads:
        thread.join(timeout=timeout)
    return results


def run_concurrently(calls: list[Callable[[], T]], spacing: float) -> list[tuple[float, T | Exception]]:
    """Start each call ``spacing`` s after the previous one; see ``run_in_threads``."""
    return run_in_threads(calls, lambda index: time.sleep(spacing))


def send_in_order(api: RuntimeAPI, backend: str, calls: list[Callable[[], T]]) -> list[tuple[float, T | Exception]]:
    """Like ``run_concurrently``, but each call starts only once HAProxy has received the previous one.

    So HAProxy receives them in the order of ``calls``, whatever the thread scheduling.
    """
    base = requests_received(api, backend)
    return run_in_threads(calls, lambda index: wait_until(
        lambda: requests_received(api, backend) >= base + index + 1, f"request {index} at HAProxy", 30, 0.005))


HAPROXY_LOG_LINE = re.compile(r"\[(\d+/\w+/\d+:\d+:\d+:\d+)\.\d+\] \S+ workers/\S+ .* \d+/\d+/\d+/\d+/\+?(\d+) ")


def haproxy_retries(log_path: Path, since: float) -> int:
    """Requests to the workers that HAProxy retried (the last field of "actconn/.../retries") since ``since``."""
    count = 0
    for line in log_path.read_text().splitlines():
        match = HAPROXY_LOG_LINE.search(line)
        if match and int(match.group(2)) > 0:
            logged = time.mktime(time.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S"))
            count += logged >= int(since)
    return count


def client_context(ca: Path, cert: Path | None = None) -> ssl.SSLContext:
    """A TLS client that trusts ``ca`` and presents ``cert`` (certificate + key PEM), if given."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert))
    return context


def assert_refused(url: str, refused: dict[str, ssl.SSLContext], who: str) -> None:
    """That ``url`` refuses each of these TLS clients (keyed by what they present) at the handshake."""
    for what, context in refused.items():
        with pytest.raises(httpx.TransportError):
            httpx.get(url, verify=context, timeout=10)
            pytest.fail(f"{who} accepted a client with {what}")
