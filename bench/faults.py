"""Fault benchmark (issue 21): what five kinds of fault cost clients that resend as docs/api.md advises.

    python -m bench.faults                 # as root: each fault kind twice (about 6 minutes on 2 cores)
    python -m bench.faults --runs 3 --kinds front-killed holder-link-down

Three clusters, one after the other, each serving the fixed-latency stand-in (0.5 s a job, not a model: the subject
is the cluster): a balancer host and two node hosts in network namespaces (kinds 1 and 2), two balancers sharing a
floating address and a PostgreSQL job store with two node hosts (kinds 3 and 4), and one box run by ``launch.py``
(kind 5). During each fault two REST loops (``POST /generate``) and one ``gradio_client`` loop (pinned to the
killed web front for kinds 1 and 2) send small jobs back to back and resend a failed one after 0.5 s, 1 s, 2 s
(``bench.harness.fault_load``, ``bench.harness.fault_kinds``). Per kind it prints the calls whose first try failed,
those lost after every resend, the longest extra time of a call beyond a normal one, the time the floating address
was on both balancers (pair faults) and the load average, and writes them to ``bench/results/faults.md``.
Root only (``ip``, Debian's ``iptables`` and ``keepalived``, PostgreSQL's server binaries).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from balancer.config.loading import load_cluster_file
from bench.cli import prepare_lab_run
from bench.harness import fault_kinds
from bench.harness.cluster_options import ClusterOptions
from bench.harness.fault_figures import HEADERS, FaultRun, summary_rows
from bench.harness.fault_load import run_fault
from bench.harness.front_return import pinned_headers
from bench.harness.hosts_cluster import NODE_HOSTS, HostsCluster
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.netns import NetworkLab
from bench.harness.pair import LAB_HOSTS, PairCluster
from bench.harness.postgres import PostgresServer
from bench.harness.processes import REPO, Processes
from bench.report import machine_summary, markdown_table, write_results

logger = logging.getLogger("bench.faults")

JOB_S = 0.5
WORKER = ["--model", f"standin:{JOB_S:g}", "--threads", "1"]
PAIR = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = {**PAIR["health"], "slowstart": 0}
"""The documented multi-host checks (0.25 s, 0.5 s timeout), no slow start (a returning worker at full weight)."""
START_S = 300.0
KINDS = {
    "front-killed": "1. a node host's web front killed, comes back",
    "front-returned-busy": "2. the returned front's first calls beside CPU hogs",
    "holder-daemons-killed": "3. the holder's HAProxy + keepalived SIGKILLed",
    "holder-link-down": "4. the holder's link down with jobs in flight, then up",
    "workers-killed": "5. both busy workers SIGKILLed (one box)",
}
"""Fault kind -> its row label."""


@contextmanager
def hosts_lab(run_dir: Path) -> Iterator[HostsCluster]:
    with Processes("bench-faults-hosts") as processes, NetworkLab(["b", *NODE_HOSTS.values()], processes) as lab:
        cluster = HostsCluster(lab, run_dir, HEALTH, worker_args=WORKER)
        cluster.start(START_S)
        yield cluster


@contextmanager
def pair_lab(run_dir: Path) -> Iterator[PairCluster]:
    with (Processes("bench-faults-pair") as processes, NetworkLab(LAB_HOSTS, processes) as lab,
          PostgresServer(lab.client_address) as store):
        cluster = PairCluster(lab, run_dir, HEALTH, PAIR["floating"]["advert_interval"], worker_args=WORKER,
                              jobs={"store_url": store.url})
        cluster.start(START_S)
        yield cluster


@contextmanager
def one_box(run_dir: Path) -> Iterator[LaunchedCluster]:
    with LaunchedCluster(ClusterOptions(model=f"standin:{JOB_S:g}", nodes=2, start_timeout=START_S),
                         name="bench-faults") as cluster:
        cluster.wait_jobs_ready()
        yield cluster


LABS: list[tuple[Callable[[Path], AbstractContextManager[Any]], dict[str, Callable[[Any], fault_kinds.Operation]]]] = [
    (hosts_lab, {"front-killed": fault_kinds.front_killed, "front-returned-busy": fault_kinds.returned_front_busy}),
    (pair_lab, {"holder-daemons-killed": fault_kinds.holder_daemons_killed,
                "holder-link-down": fault_kinds.holder_cut}),
    (one_box, {"workers-killed": fault_kinds.workers_killed}),
]
"""Each cluster, and the fault kinds run on it (in turn, ``--runs`` times)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="Runs of each fault kind (1-5), on one cluster per lab.")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), help="Fault kinds to run.")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 5:
        parser.error("--runs: 1 to 5")
    return args


def measure(runs: int, kinds: list[str]) -> tuple[list[FaultRun], list[str]]:
    """Every chosen kind ``runs`` times, each lab's cluster started once (stopped, also on failure); the runs, and
    why a lab stopped early (a cluster that did not start, a fault that did not settle: the next lab goes on)."""
    results: list[FaultRun] = []
    stopped: list[str] = []
    for lab, operations in LABS:
        chosen = {kind: make for kind, make in operations.items() if kind in kinds}
        if not chosen:
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="portrait-faults-") as run_dir, lab(Path(run_dir)) as cluster:
                url = getattr(cluster, "public_url", None) or cluster.url
                for index in range(runs):
                    for kind, make in chosen.items():
                        headers = pinned_headers(fault_kinds.RETURNING) if kind.startswith("front-") else None
                        run = run_fault(KINDS[kind], url, make(cluster), gradio_headers=headers)
                        logger.info("%s, run %d: %s", kind, index + 1, run_line(run))
                        results.append(run)
        except Exception as exc:  # reported in the results, not hidden
            logger.exception("%s stopped", lab.__name__)
            stopped.append(f"{lab.__name__} stopped after {len(results)} runs in all: {type(exc).__name__}: {exc}")
    return results, stopped


def first_try_cause(detail: str) -> str:
    """A failed try's cause in a few words: ``CallFailed: HTTP 503: No worker is up`` -> ``HTTP 503``."""
    return detail.removeprefix("CallFailed: ").split(":")[0].split(" (")[0].strip()


def first_try_causes(run: FaultRun) -> str:
    """Why counted calls' first tries failed (``cause × count``; a page load's resends name none)."""
    causes = Counter(first_try_cause(r.detail) for r in run.counted() if r.detail)
    return ", ".join(f"{cause} × {n}" for cause, n in causes.most_common()) or "none"


def run_line(run: FaultRun) -> str:
    """One line per run for the doc: its counts, notes and first-try failures."""
    extra = run.max_extra_s()
    return (f"{len(run.counted())} calls, {run.failed_first_tries()} failed first tries, {run.lost()} lost, most "
            f"extra {'–' if extra is None else f'{extra:.2f}'} s; {'; '.join(run.notes)}; first tries failed with: "
            f"{first_try_causes(run)}")


def render(runs: list[FaultRun], reproduce: str, machine: str, stopped: Sequence[str] = ()) -> str:
    """The Markdown of ``bench/results/faults.md``: the method, the table, one line per run."""
    lines = [
        "# Fault benchmark (issue 21)", "",
        "Each fault kind runs on its own cluster serving the fixed-latency stand-in (0.5 s a job, not a model): a "
        "balancer host and two node hosts in network namespaces (1, 2), two balancers sharing a floating address "
        "(keepalived, the example's 0.5 s adverts) and a PostgreSQL job store with two node hosts (3, 4), one box run "
        "by `launch.py` with the default configuration (5). During each fault two REST loops (`POST /generate`, "
        "TCP keep-alive, 30 s read timeout) and one `gradio_client` loop (pinned by cookie to the killed front in 1 "
        "and 2) send small jobs back to back and resend a failed call after 0.5 s, 1 s, 2 s (docs/api.md); in 2, three "
        "more pinned clients make their first calls on the returned front beside one CPU hog per core; in 3, a page "
        "loop (every 0.1 s) runs too. Counted: every call in flight between the fault and 2 s after the cluster "
        "settled (in 2: from the front's return). *Failed first tries*: calls that needed a resend or were lost; "
        "*lost after resends*: every resend failed; *max extra latency*: the slowest counted call beyond the median "
        "first-try call of its client kind before the fault; *time with two holders*: `ip -o addr` sampled every "
        f"50 ms in both balancers (total over the runs); *load average*: 1 min, at each run's end. {machine}.", "",
        markdown_table(HEADERS, summary_rows(runs)), "",
        "Runs:", "",
        *[f"- {run.kind}: {run_line(run)}" for run in runs],
        *[f"- **not measured**: {reason}" for reason in stopped], "",
        f"Reproduce (as root, alone on the machine): `{reproduce}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write bench/results/faults.md."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if shutil.which("keepalived") is None:
        raise SystemExit("error: keepalived is not installed (scripts/setup.sh --dev as root)")
    prepare_lab_run()
    runs, stopped = measure(args.runs, args.kinds)
    markdown = render(runs, " ".join(["python -m bench.faults", *map(shlex.quote, argv)]), machine_summary(), stopped)
    print(markdown)
    for path in write_results("faults", markdown, None):
        print(f"wrote {path}", flush=True)
    # Every lab is gone; a gradio_client call given up on may still block a non-daemon thread of its own on a
    # connection into a deleted namespace (its event stream has no read timeout), which would hold the exit.
    os._exit(0)


if __name__ == "__main__":
    main()
