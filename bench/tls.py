"""What mutual TLS between HAProxy and a node adds to a REST job.

    python -m bench.tls                       # 60 requests per path, stand-in sleeping 0.05 s
    python -m bench.tls --requests 200 --standin 0.02 --size 256

Two HAProxy instances rendered from the same cluster description, each in front of its own
worker serving ``--model standin:SECONDS`` (``webui.worker.pipelines.standin``: **not a model**, a fixed
sleep and a real PNG, so the transport is not lost in a model's variance): one over plain HTTP,
one over mutual TLS (``python -m balancer.multihost.certs`` certificates, ``ssl verify required``, the
worker requiring a client certificate). HAProxy opens a fresh connection per job
(``http-reuse never``), so every TLS job pays a full handshake. One client, sequential
``POST /generate`` on the public port, the two paths interleaved so that drift on the machine
hits both alike. The load average is taken before and after. Results go to
``bench/results/tls.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from balancer.config.cluster import ClusterSpec
from balancer.config.loading import parse_cluster
from balancer.haproxy.config import WORKERS_BACKEND
from balancer.multihost.authority import Identity
from balancer.multihost.certs import Plan
from bench.cli import prepare_run
from bench.harness.balancer import cluster_data, running_haproxy, wait_servers_up
from bench.harness.generation import Job
from bench.harness.processes import Processes, free_port
from bench.harness.rest_client import RestClient
from bench.report import LatencyStats, fmt_ms, load_averages, machine_summary, markdown_table, write_results

PATHS = ("plain", "mtls")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="Sequential requests per path.")
    parser.add_argument("--standin", type=float, default=0.05, help="Seconds the stand-in sleeps per job.")
    parser.add_argument("--size", type=int, default=256, help="Image width and height in pixels.")
    args = parser.parse_args(argv)
    if args.requests < 2 or args.standin < 0 or args.size < 64:
        parser.error("--requests must be at least 2, --standin at least 0, --size at least 64")
    return args


def balancer_spec(run_dir: Path, worker_port: int, tls: dict | None) -> ClusterSpec:
    """One remote worker, ``node``, behind HAProxy on free loopback ports (over mutual TLS when ``tls``)."""
    data = cluster_data(run_dir, [], ["node"], tls=tls)
    data["nodes"][0].update(cert_name="node", worker={"port": worker_port})
    return parse_cluster(data)


def start_path(stack: contextlib.ExitStack, processes: Processes, root: Path, name: str, args: argparse.Namespace,
               certs: Path | None) -> ClusterSpec:
    """A stand-in worker and an HAProxy in front of it (stopped with ``stack``); returns once the worker is UP."""
    port = free_port()
    tls_args = ["--tls-cert", str(certs / "node.pem"), "--tls-ca", str(certs / "ca.crt")] if certs else []
    tls = {"ca_file": str(certs / "ca.crt"), "cert_file": str(certs / "lb.pem")} if certs else None
    spec = balancer_spec(root / name, port, tls)
    worker = processes.start(["python", "-m", "webui.worker", "--port", str(port), "--node", name,
                              "--model", f"standin:{args.standin}", *tls_args], log_name=f"bench-tls-{name}")
    stack.enter_context(running_haproxy(spec, root / f"{name}-haproxy.log"))
    wait_servers_up(spec, [(WORKERS_BACKEND, "node")], alive=lambda: worker.poll() is None)
    return spec


def measure(calls: dict[str, Callable[[Job], object]], job: Job, requests: int) -> dict[str, list[float]]:
    """Seconds per request on each path, interleaved (after one warm-up request each)."""
    for call in calls.values():
        call(job)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(requests):
        for name, call in calls.items():
            start = time.perf_counter()
            call(job)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def render(args: argparse.Namespace, seconds: dict[str, list[float]], loads: list[tuple[float, ...]]) -> str:
    stats = {name: LatencyStats.from_seconds(values) for name, values in seconds.items()}
    plain, mtls = stats["plain"], stats["mtls"]
    rows = [[name, fmt_ms(s.median_ms), fmt_ms(s.p95_ms), fmt_ms(s.p99_ms)] for name, s in stats.items()]
    rows.append(["mutual TLS adds (ms)", f"{mtls.median_ms - plain.median_ms:.1f}",
                 f"{mtls.p95_ms - plain.p95_ms:.1f}", f"{mtls.p99_ms - plain.p99_ms:.1f}"])
    return "\n\n".join([
        "# HAProxy to node: plain HTTP vs mutual TLS (REST `POST /generate` through the public port)",
        f"`python -m bench.tls --requests {args.requests} --standin {args.standin} --size {args.size}`: "
        f"{args.requests} sequential requests per path, interleaved, {args.size}² images from "
        f"`standin:{args.standin}` (**not a model**: a fixed sleep and a real PNG). A fresh HAProxy-to-node "
        "connection per job (`http-reuse never`), so each mutual-TLS job includes a full handshake "
        "(ECDSA P-256 certificates).",
        markdown_table(["path", "p50 ms", "p95 ms", "p99 ms"], rows),
        f"{load_averages(loads)}. {machine_summary()}.",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prepare_run()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp, Processes("bench-tls") as processes:
        root = Path(tmp)
        certs = root / "certs"
        Plan(certs, balancers=(Identity.parse("lb"),), nodes=(Identity.parse("node=127.0.0.1"),)).issue()
        with contextlib.ExitStack() as stack:
            specs = {name: start_path(stack, processes, root, name, args, certs if name == "mtls" else None)
                     for name in PATHS}
            clients = {name: RestClient(spec.public.url) for name, spec in specs.items()}
            job = Job(prompt="tls bench", steps=2, width=args.size, height=args.size, seed=7)
            loads = [os.getloadavg()]
            seconds = measure({name: client.generate for name, client in clients.items()}, job, args.requests)
            loads.append(os.getloadavg())
    report = render(args, seconds, loads)
    for path in write_results("tls", report, None):
        print(path)
    print(report)


if __name__ == "__main__":
    main()
