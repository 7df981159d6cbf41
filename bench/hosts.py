"""Lost-host benchmark: what a node host that stops answering costs, for several health-check settings.

    python -m bench.hosts                        # as root: 3 faults x 2 repeats x 3 check settings
    python -m bench.hosts --profiles example --repeats 3

For each check setting (``PROFILES``) it builds a balancer host and two node hosts in network
namespaces (``bench.harness.hosts_cluster``: ``launch.py --role balancer`` / ``--role node``, demo model,
one REST job at a time) and, for each fault (link down, packets dropped, every process of the host
SIGSTOPped), breaks the host that runs a job ``--into-job`` seconds after it started. It reports how
soon HAProxy took the lost worker out of rotation (from then on new jobs avoid it), how much longer
the job took than its run on the worker that answered it (``extra``), and that less the work lost on the broken host
(``overhead``: time from the fault until the job finished, beyond its run on the other worker). The job
must finish on the other host; one that did not is counted, and why is listed. Then, for each UI
client (a reused ``gradio_client``, a browser tab speaking Gradio's protocol), the node host of its
sticky web front loses its link ``--into-job`` seconds into a job: the client sends the job again, as
its user would, and the table shows how many tries it took and how much longer than a normal job
(``--ui-faults none`` skips it). Root only (``ip``, Debian's ``iptables``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from balancer.config.health import HealthSpec
from balancer.config.loading import load_cluster_file
from bench.cli import prepare_lab_run
from bench.harness.hosts_cluster import BALANCER, NODE_HOSTS, HostsCluster
from bench.harness.lost_host import FAULTS, LostHost, lose_host_mid_job
from bench.harness.lost_web_front import UI_CLIENTS, LostWebFront, lose_web_front_mid_job
from bench.harness.netns import NetworkLab
from bench.harness.processes import REPO, Processes
from bench.report import machine_summary, markdown_table, write_results
from webui.settings_common import default_cache_dir
from webui.worker.pipelines.loader import ensure_demo_model

logger = logging.getLogger("bench.hosts")

EXAMPLE = REPO / "assets" / "cluster.hosts.example.yaml"
PROFILES: dict[str, dict[str, float]] = {
    "defaults": {},
    "1s-timeout": {"interval": 0.5, "fast_interval": 0.25, "down_interval": 0.5, "timeout": 1.0},
    "example": load_cluster_file(EXAMPLE)["health"],
}
"""Health-check settings compared (``health:`` in the cluster file; {} = balancer/config/health.py's defaults;
``example``: assets/cluster.hosts.example.yaml's)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES),
                        help="Health-check settings to compare.")
    parser.add_argument("--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    parser.add_argument("--ui-faults", nargs="+", choices=[*FAULTS, "none"], default=["link-down"],
                        help="Faults of a UI client's web front host (none: skip).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each fault for each setting (1-10).")
    parser.add_argument("--into-job", type=float, default=1.0, help="Seconds into the job when the host is lost.")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="Seconds the lab cluster may take to start.")
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 10:
        parser.error("--repeats: 1 to 10")
    return args


def describe(profile: str) -> str:
    """A check setting in words: every interval, timeout and fall count."""
    health = HealthSpec(**PROFILES[profile])
    return (f"checks every {health.interval:g} s ({health.fast_interval:g} s while changing), "
            f"{health.timeout:g} s timeout, fall {health.fall}; host agent every {health.host_agent_interval:g} s")


def measure(profile: str, args: argparse.Namespace) -> tuple[float, list[LostHost], list[LostWebFront]]:
    """One lab cluster with ``profile``'s checks: the no-fault job time, each fault's ``LostHost``, and each UI
    client's ``LostWebFront``."""
    health = HealthSpec(**PROFILES[profile]).model_dump()
    with tempfile.TemporaryDirectory(prefix="portrait-hosts-") as run_dir, Processes("bench-hosts") as processes, \
            NetworkLab([BALANCER, *NODE_HOSTS.values()], processes) as lab:
        cluster = HostsCluster(lab, Path(run_dir), health)
        cluster.start(args.start_timeout)
        baseline = cluster.baseline()
        logger.info("%s: a job alone takes %.2f s", profile, baseline)
        lost, fronts = [], []
        for _ in range(args.repeats):
            for fault in args.faults:
                lost.append(lose_host_mid_job(cluster, fault, args.into_job))
                logger.info("%s/%s: %s", profile, fault, lost[-1].figures())
            for fault in (f for f in args.ui_faults if f != "none"):
                for kind in UI_CLIENTS:
                    fronts.append(lose_web_front_mid_job(cluster, fault, kind, args.into_job))
                    logger.info("%s/%s/%s: %s", profile, fault, kind, fronts[-1].figures())
    return baseline, lost, fronts


def finished_elsewhere(lost: LostHost) -> bool:
    """Whether the job got its image from the other host (a lost host can answer nothing)."""
    response = lost.response
    return isinstance(response, httpx.Response) and response.status_code == 200 and \
        response.json().get("worker_id") == lost.survivor


def failure(lost: LostHost) -> str:
    """Why a job did not finish on the other host, in one line."""
    response = lost.response
    if isinstance(response, Exception):
        return f"{type(response).__name__}: {response}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    return f"answered by {response.json().get('worker_id')}, the lost host"


def rows(profile: str, baseline: float, lost: list[LostHost], faults: list[str]) -> list[list[object]]:
    """One table row per fault: medians and maxima over the repeats (of the jobs that got an image)."""
    table = []
    for fault in faults:
        runs = [item for item in lost if item.fault == fault]
        figures = [item.figures() for item in runs if item.replay_s is not None]

        def stat(key: str, runs_figures: list[dict] = figures) -> str:
            values = [float(f[key]) for f in runs_figures]
            return f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "–"

        table.append([profile, fault, len(runs), sum(not finished_elsewhere(item) for item in runs),
                      stat("out_of_rotation_after_s"), stat("extra_s"), stat("overhead_s"), f"{baseline:.2f}"])
    return table


def ui_rows(profile: str, fronts: list[LostWebFront]) -> list[list[object]]:
    """One table row per UI client and fault: tries, and seconds beyond a normal job (median / max)."""
    table = []
    for kind, fault in dict.fromkeys((item.client, item.fault) for item in fronts):
        runs = [item.figures() for item in fronts if (item.client, item.fault) == (kind, fault)]
        done = [f for f in runs if f["finished"]]

        def stat(key: str, done: list[dict] = done) -> str:
            values = [float(f[key]) for f in done if f[key] is not None]
            return f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "–"

        table.append([profile, kind, fault, len(runs), len(runs) - len(done), stat("tries"), stat("resend_after_s"),
                      stat("extra_s"), stat("normal_s")])
    return table


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write bench/results/hosts.md."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    prepare_lab_run()
    ensure_demo_model(default_cache_dir())  # once, before four processes would race to build it
    table: list[list[object]] = []
    ui_table: list[list[object]] = []
    settings: list[str] = []
    failures: list[str] = []
    for profile in args.profiles:
        baseline, lost, fronts = measure(profile, args)
        table += rows(profile, baseline, lost, args.faults)
        ui_table += ui_rows(profile, fronts)
        failures += [f"{profile}/{item.fault}: {failure(item)}" for item in lost if not finished_elsewhere(item)]
        settings.append(f"- `{profile}`: {describe(profile)}")
    headers = ["checks", "fault", "runs", "not replayed", "out of rotation s (median / max)",
               "extra s (median / max)", "overhead s (median / max)", "job alone s"]
    markdown = "\n".join([
        "# Lost-host benchmark", "",
        f"A balancer host and two node hosts in network namespaces, demo model 512², 8 steps, one REST job at "
        f"a time; the host running it is lost {args.into_job:g} s into the job. {machine_summary()}.", "",
        markdown_table(headers, table), "",
        "*Out of rotation*: from the fault until HAProxy had the lost worker DOWN (new jobs avoid it from then "
        "on). *Extra*: the job's time, as its client saw it, beyond its run on the worker that answered it (that "
        "worker's own timing: what the job cost at that moment without a fault; on 2 cores shared with other "
        "test suites a job alone varies over a run). *Overhead*: extra less the work lost on the "
        "broken host (the time into the job): detection, and sending the job again. *Job alone*: one job with "
        "no fault at the start of each setting's run. Every job must finish on the other host.", "",
        *(["A UI client whose sticky web front is on the lost host (its link down that long into a job) cannot "
           "finish that job: its queue and files were on that web front. It sends the job again, as its user "
           "would (the same client: a reused `gradio_client` keeps its stale cookie, which HAProxy's affinity "
           "rules send to one live web front; a browser tab takes the new web front's cookie).", "",
           markdown_table(["checks", "client", "fault", "runs", "not finished", "tries (median / max)",
                           "resent after fault s (median / max)", "extra s (median / max)",
                           "normal job s (median / max)"], ui_table), "",
           "*Resent after fault*: from the fault until the first try failed and the client sent the job again. "
           "*Extra*: from the first send until the image, beyond the same client's job just before (normal "
           "job).", ""] if ui_table else []),
        "Check settings (`health:` in the cluster file):", "", *settings, "",
        *([f"Jobs that did not finish on the other host: {'; '.join(failures)}.", ""] if failures else []),
        "Reproduce (as root): `" + " ".join(["python -m bench.hosts", *map(shlex.quote, argv)]) + "`",
    ])
    print(markdown)
    for path in write_results("hosts", markdown, None):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
