"""GPU duty cycle on node hosts: a worker's dispatch agent answering through its host agent, with the stand-in.

    python -m bench.hosts_saturation                                     # as root
    python -m bench.hosts_saturation --standin 1.0 --size 1024 --seconds 20 --rounds 2

A balancer host and two node hosts in network namespaces (``bench.harness.hosts_cluster``: ``launch.py --role
balancer`` / ``--role node``), each node host's worker serving ``standin:SECONDS``: **not a model**; a
job sleeps that long (the "GPU" time), then the worker PNG-encodes a real image. Two labs, one after
the other (they share the namespaces' names): the workers without a dispatch agent (one job each until
its response is sent, encoding included), then with ``dispatch_agent_port`` (on the node host's
loopback; its host agent passes its answer to HAProxy every ``health.dispatch_agent_interval``). In each,
``--rounds`` phases of ``--concurrency`` REST clients sending jobs back to back through the balancer for
``--seconds``; the duty cycle is the growth of the workers' ``portrait_worker_generating_seconds_total``
over a phase (its first second left out) / (wall time × workers). Before the phases, the CPU that node
host ``n1``'s processes use with no job running (what the agent checks cost). Root only (``ip``,
Debian's ``iptables``). Results: ``bench/results/hosts-saturation.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import tempfile
import time
from functools import reduce
from operator import add
from pathlib import Path

import psutil

from balancer.config.loading import load_cluster_file
from bench.cli import prepare_lab_run
from bench.harness.generation import Job
from bench.harness.hosts_cluster import BALANCER, NODE_HOSTS, HostsCluster
from bench.harness.netns import NetworkLab
from bench.harness.processes import REPO, Processes
from bench.report import load_averages, machine_summary, markdown_table, write_results
from bench.serving.measure import PROMPT
from bench.serving.saturation import SATURATION_VARIANTS, WARM_UP, Saturation, saturation_phase

logger = logging.getLogger("bench.hosts_saturation")

HEALTH = {**load_cluster_file(REPO / "assets" / "cluster.hosts.example.yaml")["health"], "slowstart": 0}
"""The documented multi-host checks; no slowstart (a returning server's maxconn would ramp up over it)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts_saturation", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--standin", type=float, default=1.0, help="Seconds each stand-in job sleeps (0.1-10).")
    parser.add_argument("--size", type=int, default=1024, help="Image width and height in pixels.")
    parser.add_argument("--steps", type=int, default=8, help="Steps per job (progress events).")
    parser.add_argument("--concurrency", type=int, default=4, help="REST clients (more than the 2 workers).")
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of each phase.")
    parser.add_argument("--rounds", type=int, default=2, help="Phases per lab (1-10).")
    parser.add_argument("--max-requests", type=int, default=200, help="Most requests per client per phase.")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="Seconds a lab may take to start.")
    args = parser.parse_args(argv)
    if not 0.1 <= args.standin <= 10 or not 1 <= args.rounds <= 10 or args.seconds <= WARM_UP:
        parser.error(f"--standin 0.1-10, --rounds 1-10, --seconds above {WARM_UP:g}")
    return args


IDLE_SECONDS = 10.0
"""How long the idle CPU of a node host's processes is measured, before the phases."""
PARTS = {"webui.worker": "worker", "webui.web": "web front", "launch.py": "sidecar"}
"""A command-line word -> the node host process it names."""


def idle_cpu(cluster: HostsCluster, host: str) -> dict[str, float]:
    """Percent of a core each of ``host``'s processes (sidecar, worker, web front) used over ``IDLE_SECONDS``
    with no job running: what the agent checks cost."""
    processes: dict[str, list[psutil.Process]] = {}
    for pid in cluster.lab.pids(host):
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            words = process.cmdline()
            name = next((name for word, name in PARTS.items() if any(word in arg for arg in words)), None)
            if name is not None:
                processes.setdefault(name, []).append(process)

    def seconds() -> dict[str, float]:
        return {name: sum(sum(p.cpu_times()[:2]) for p in group) for name, group in processes.items()}

    before = seconds()
    time.sleep(IDLE_SECONDS)
    after = seconds()
    return {name: 100 * (after[name] - before[name]) / IDLE_SECONDS for name in processes}


def measure(agent: bool, args: argparse.Namespace) -> tuple[dict[str, float], list[Saturation]]:
    """The idle CPU of node host n1's processes, then ``args.rounds`` saturation phases, on a fresh lab whose
    workers have a dispatch agent or not."""
    job = Job(PROMPT, args.steps, args.size, args.size, seed=3000, guidance=0.0)
    worker_args = ["--model", f"standin:{args.standin:g}", "--threads", "1"]
    with tempfile.TemporaryDirectory(prefix="portrait-hosts-duty-") as run_dir, \
            Processes("bench-hosts-duty") as processes, \
            NetworkLab([BALANCER, *NODE_HOSTS.values()], processes) as lab:
        cluster = HostsCluster(lab, Path(run_dir), HEALTH, worker_args=worker_args, dispatch_agent=agent)
        cluster.start(args.start_timeout)
        idle = idle_cpu(cluster, NODE_HOSTS["node1"])
        logger.info("%s: idle CPU on n1 %s", SATURATION_VARIANTS[agent], idle)
        phases = []
        for round_ in range(args.rounds):
            phases.append(saturation_phase(cluster.url, cluster.worker_urls(), agent, job, args))
            logger.info("round %d, %s: %.2f jobs/s, %d failed, duty %.1f %%", round_ + 1, SATURATION_VARIANTS[agent],
                        phases[-1].throughput.per_second, phases[-1].throughput.failed, 100 * phases[-1].duty)
    return idle, phases


def render(args: argparse.Namespace, argv: list[str], phases: list[Saturation], loads: list[tuple[float, ...]],
           idle: dict[bool, dict[str, float]]) -> str:
    """The Markdown report: jobs/s, failures and duty cycle per variant; what the agent checks cost when idle."""
    rows, rates = [], {}
    for agent, name in SATURATION_VARIANTS.items():
        mine = [phase for phase in phases if phase.agent == agent]
        total = reduce(add, [phase.throughput for phase in mine])
        duties = [phase.duty for phase in mine]
        rates[agent] = total.per_second
        rows.append([name, total.phases, total.ok, total.failed, f"{total.per_second:.3f}",
                     f"{100 * sum(duties) / len(duties):.1f} %", f"{100 * min(duties):.1f} %"])
    return "\n".join([
        "# GPU duty cycle on node hosts, with the fixed-latency stand-in",
        "",
        f"A balancer host and two node hosts (network namespaces), one worker each serving `standin:{args.standin:g}`:"
        f" **not a model**; each job sleeps {args.standin:g} s (the 'GPU' time), then the worker PNG-encodes a "
        f"{args.size}×{args.size} image. One lab whose workers have no dispatch agent, then one whose workers' "
        "dispatch agents answer HAProxy through their host agent; "
        f"{args.rounds} phase(s) of {args.seconds:g} s each, {args.concurrency} REST clients through the balancer "
        "back to back (checking status, seed and PNG header). Duty cycle: growth of the workers' generating "
        f"seconds over each phase (its first {WARM_UP:g} s left out) / (wall time × 2 workers).",
        "",
        f"**These are CPU numbers**: {machine_summary()}. {load_averages(loads)}.",
        "",
        markdown_table(["variant", "phases", "completed", "failed", "jobs/s", "duty cycle (mean)",
                        "duty cycle (worst phase)"], rows),
        "",
        f"With the agent / without: {rates[True] / rates[False]:.2f}× the jobs/s.",
        "",
        f"What the agent checks cost with no job running (node host n1: one worker, one web front, its sidecar "
        f"answering one balancer; {IDLE_SECONDS:g} s before the phases), percent of a core:",
        "",
        markdown_table(["variant", *sorted(idle[False])],
                       [[name, *(f"{idle[agent].get(part, 0.0):.1f}" for part in sorted(idle[False]))]
                        for agent, name in SATURATION_VARIANTS.items()]),
        "",
        "Reproduce (as root): `" + " ".join(["python -m bench.hosts_saturation", *map(shlex.quote, argv)]) + "`",
    ])


def main(argv: list[str] | None = None) -> None:
    """Run both labs, print the table, write bench/results/hosts-saturation.md."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    prepare_lab_run()
    loads = [os.getloadavg()]
    idle, phases = {}, []
    for agent in SATURATION_VARIANTS:
        idle[agent], lab_phases = measure(agent, args)
        phases += lab_phases
    loads.append(os.getloadavg())
    markdown = render(args, argv, phases, loads, idle)
    print(markdown)
    for path in write_results("hosts-saturation", markdown, None):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
