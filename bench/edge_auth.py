"""What a password guesser and a body hoarder cost HAProxy's public frontend (stand-in nodes, no model).

    python -m bench.edge_auth                 # prints a Markdown section for the code it runs
    python -m bench.edge_auth --attack 8 --bodies 300

HAProxy as ``balancer.haproxy.config`` renders it, with basic auth (users hashed by ``openssl passwd -6``,
SHA-512 crypt, 5000 rounds) in front of one stand-in web front and worker (``tests.fake_node``). Measured:

1. HAProxy CPU time per login attempt (its own process CPU, not wall time): a wrong password for a
   known user, and any password for an unknown user name, each attempt from a fresh loopback address;
2. a legitimate user's request latency (one request every 20 ms on a kept-alive connection) alone, then
   while 4 connections (4 addresses) send wrong passwords as fast as they are answered; HAProxy's CPU
   share during the attack and how many guesses a second it answered;
3. HAProxy's resident memory while ``--bodies`` connections from one address each hold 1.7 MB of a
   2 MB ``/generate`` body, and after they closed.

The load average is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from balancer.config.loading import parse_cluster
from balancer.haproxy.config import WEBS_BACKEND, WORKERS_BACKEND
from balancer.haproxy.process import HAProxyProcess
from bench.harness.balancer import cluster_data, running_haproxy, wait_servers_up
from bench.harness.processes import Processes
from bench.harness.waiting import wait_http
from bench.report import LatencyStats, markdown_table

PASSWORD = "correct-horse"
HELD_BYTES = 1_700_000


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@contextlib.contextmanager
def started(processes: Processes, root: Path) -> Iterator[tuple[HAProxyProcess, str]]:
    """HAProxy (basic auth, no rate limit) in front of one stand-in web front and worker; it and its public URL."""
    hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=PASSWORD, capture_output=True, text=True,
                            check=True).stdout.strip()
    (root / "users").write_text(f"alice:{hashed}\ncarol:{hashed}\n")
    spec = parse_cluster(cluster_data(root, ["node"], ["node"], users_file=str(root / "users"),
                                      limits={"rate_limit_per_minute": 0}))
    node = spec.nodes[0]
    for part, port in (("web", node.web.port), ("worker", node.worker.port)):  # type: ignore[union-attr]
        processes.start([sys.executable, "-m", "tests.fake_node", "--name", part, "--port", str(port)],
                        log_name=f"fake-{part}")
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
    with running_haproxy(spec) as haproxy:
        wait_servers_up(spec, [(WEBS_BACKEND, "node"), (WORKERS_BACKEND, "node")], timeout=30)
        yield haproxy, spec.public.url


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def cost_per_attempt(process: psutil.Process, url: str, user: str, attempts: int, first: int) -> float:
    """HAProxy CPU milliseconds per login attempt, each from its own address (no per-address throttle)."""
    before = cpu(process)
    for index in range(attempts):
        address = f"127.1.{(first + index) // 250}.{(first + index) % 250 + 1}"
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
            client.get(url, headers=basic(f"{user}{index}" if user == "nobody" else user, f"guess{index}"))
    return (cpu(process) - before) * 1000 / attempts


def legit_latencies(url: str, seconds: float) -> list[float]:
    """Latencies of a logged-in user's requests, one every 20 ms for ``seconds``."""
    latencies = []
    with httpx.Client(headers=basic("carol", PASSWORD), timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.monotonic()
            assert client.get(url).status_code == 200
            latencies.append(time.monotonic() - start)
            time.sleep(0.02)
    return latencies


def guess(url: str, address: str, stop: threading.Event, answered: list[int]) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as client:
        count = 0
        while not stop.is_set():
            client.get(url, headers=basic("alice", f"guess{count}"))
            count += 1
        answered.append(count)


def under_attack(process: psutil.Process, url: str, connections: int,
                 seconds: float) -> tuple[list[float], float, float]:
    """Legitimate latencies while ``connections`` guessers run; HAProxy CPU share and guesses a second."""
    stop, answered = threading.Event(), []
    threads = [threading.Thread(target=guess, args=(url, f"127.2.0.{i + 1}", stop, answered))
               for i in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    before, started = cpu(process), time.monotonic()
    latencies = legit_latencies(url, seconds)
    share = (cpu(process) - before) / (time.monotonic() - started)
    stop.set()
    for thread in threads:
        thread.join()
    return latencies, share, sum(answered) / (seconds + 0.5)


def held_bodies_rss(process: psutil.Process, port: int, count: int) -> tuple[float, float, float]:
    """HAProxy RSS (MB) before, while ``count`` connections hold most of a /generate body, and after."""
    head = (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 2000000\r\n").encode() + b"".join(f"{k}: {v}\r\n".encode()
                                                          for k, v in basic("carol", PASSWORD).items()) + b"\r\n"
    before = process.memory_info().rss / 1e6
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            sock.sendall(head + b"x" * HELD_BYTES)
        except OSError:  # refused by HAProxy while sending
            pass
        socks.append(sock)
    time.sleep(1.0)
    held = process.memory_info().rss / 1e6
    for sock in socks:
        sock.close()
    time.sleep(1.0)
    return before, held, process.memory_info().rss / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_auth", description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=100, help="Login attempts per kind for the CPU cost.")
    parser.add_argument("--attack", type=int, default=4, help="Guessing connections.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds of each latency measurement.")
    parser.add_argument("--bodies", type=int, default=300, help="Connections holding a body.")
    args = parser.parse_args(argv)
    loads = [os.getloadavg()]
    with Processes("edge-auth") as processes, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        root.mkdir(mode=0o700)
        with started(processes, root) as (haproxy, url):
            process = psutil.Process(haproxy.pid)
            known = cost_per_attempt(process, url, "alice", args.attempts, 0)
            unknown = cost_per_attempt(process, url, "nobody", args.attempts, args.attempts)
            alone = LatencyStats.from_seconds(legit_latencies(url, args.seconds))
            attacked, share, rate = under_attack(process, url, args.attack, args.seconds)
            attack = LatencyStats.from_seconds(attacked)
            rss = held_bodies_rss(process, int(url.rsplit(":", 1)[1]), args.bodies)
    loads.append(os.getloadavg())
    print(markdown_table(["measure", "value"], [
        ["HAProxy CPU per wrong password, known user (ms)", f"{known:.2f}"],
        ["HAProxy CPU per attempt, unknown user (ms)", f"{unknown:.2f}"],
        ["legitimate request p50 / p95, alone (ms)", f"{alone.median_ms:.1f} / {alone.p95_ms:.1f}"],
        [f"legitimate request p50 / p95, {args.attack} guessing connections (ms)",
         f"{attack.median_ms:.1f} / {attack.p95_ms:.1f}"],
        ["HAProxy CPU during the attack", f"{share:.0%}"],
        ["guesses answered a second", f"{rate:.0f}"],
        [f"HAProxy RSS before / {args.bodies} held bodies / after closing (MB)",
         " / ".join(f"{value:.0f}" for value in rss)],
    ]))
    print(f"\nLoad average (1, 5, 15 min) before: {loads[0]}; after: {loads[-1]}")


if __name__ == "__main__":
    main()
