"""Lost-balancer benchmark: how soon the floating address moves when the balancer holding it dies.

    python -m bench.pair                            # as root: advert intervals 1 and 0.5 s, 2 runs each
    python -m bench.pair --adverts 0.5 --repeats 3

For each VRRP advert interval it builds two balancer hosts sharing a floating address (keepalived)
and two node hosts in network namespaces (``bench.harness.pair``), loads pages through the address
with a browser-style client while a REST job runs, and kills the balancer holding it (every process
SIGKILLed, link down). It reports when the address was on the other balancer, the longest time without
a page loaded, the slowest page load beyond a normal one, failed requests (after the client's
retries), and whether sticky sessions kept their web front. Root only (``ip``, Debian's ``iptables``
and ``keepalived``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from balancer.config.loading import load_cluster_file
from bench.cli import prepare_run
from bench.harness.netns import NetworkLab, missing_for_labs
from bench.harness.pair import LAB_HOSTS, PairCluster, lose_balancer_mid_load
from bench.harness.processes import REPO, Processes
from bench.report import machine_summary, markdown_table, write_results
from webui.settings_common import default_cache_dir
from webui.worker.pipelines.loader import ensure_demo_model

logger = logging.getLogger("bench.pair")

EXAMPLE = load_cluster_file(REPO / "assets" / "cluster.pair.example.yaml")
HEALTH = {**EXAMPLE["health"], "slowstart": 0}
"""The example's checks, without slow start (both balancers weigh the nodes alike at once)."""
COLUMNS = {
    "address_moved_after_s": "address moved s",
    "page_gap_s": "longest time without a page s",
    "page_most_extra_s": "slowest page, extra s",
}
"""Figures tabulated as median / max over the runs."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pair", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--adverts", nargs="+", type=float, default=[1.0, 0.5],
                        help="VRRP advert intervals to compare (floating.advert_interval, 0.1-25.5 s).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs for each interval (1-10), each on a fresh lab.")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="Seconds the lab cluster may take to start.")
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 10:
        parser.error("--repeats: 1 to 10")
    if not all(0.1 <= advert <= 25.5 for advert in args.adverts):
        parser.error("--adverts: each 0.1 to 25.5 s")
    return args


def measure(advert: float, start_timeout: float) -> dict[str, object]:
    """One lab, one lost balancer: its figures."""
    with tempfile.TemporaryDirectory(prefix="portrait-pair-") as run_dir, Processes("bench-pair") as processes, \
            NetworkLab(LAB_HOSTS, processes) as lab:
        cluster = PairCluster(lab, Path(run_dir), HEALTH, advert)
        cluster.start(start_timeout)
        lost = lose_balancer_mid_load(cluster)
        figures = lost.figures()
        figures["job_answered"] = lost.job is not None and lost.job.status_code == 200
    logger.info("advert %g s: %s", advert, figures)
    return figures


def row(advert: float, runs: list[dict[str, object]]) -> list[object]:
    """Medians / maxima of one advert interval's runs, and their counts."""
    cells: list[object] = [f"{advert:g}", len(runs)]
    for key in COLUMNS:
        values = [float(run[key]) for run in runs if run[key] is not None]
        cells.append(f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "–")
    cells += [sum(int(run["page_requests_failed"]) for run in runs),
              sum(not run["job_answered"] for run in runs),
              sum(bool(run["web_front_kept"]) for run in runs),
              f"{sum(int(run['session_hashes_same_front']) for run in runs)} / "
              f"{sum(int(run['session_hashes']) for run in runs)}"]
    return cells


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write bench/results/pair.md."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    reason = missing_for_labs() or (None if shutil.which("keepalived") else "keepalived is not installed "
                                    "(scripts/setup.sh --dev as root)")
    if reason:
        raise SystemExit(f"error: {reason}")
    prepare_run()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_demo_model(default_cache_dir())
    table = [row(advert, [measure(advert, args.start_timeout) for _ in range(args.repeats)])
             for advert in args.adverts]
    headers = ["advert s", "runs", *COLUMNS.values(), "failed requests", "REST job lost", "cookie kept its front",
               "session hashes, same front"]
    markdown = "\n".join([
        "# Lost-balancer benchmark", "",
        "Two balancer hosts sharing a floating address (keepalived, VRRPv3, unicast) and two node hosts in "
        "network namespaces, demo model. A browser-style client loads the page every 0.1 s and one REST job "
        "runs; then the balancer holding the address is killed (every process SIGKILLed, its link down). "
        f"{machine_summary()}.", "",
        markdown_table(headers, table), "",
        "*Address moved*: from the kill until the address was on the other balancer's link. *Longest time without a "
        "page*: the longest interval between two page loads that ended (the outage the browser saw). "
        "*Slowest page, extra*: the slowest page load that ended after the kill, beyond a normal one. "
        "Every request is sent again by the client "
        "when its connection fails or dies (in-flight requests through the dead balancer are lost with their "
        "TCP connections); *failed* counts those that never got an answer in 20 s (180 s for the job). "
        "A dead holder's address moves after 3 missed adverts plus a skew of (256 − priority) / 256 advert "
        "intervals.", "",
        "Reproduce (as root): `" + " ".join(["python -m bench.pair", *map(shlex.quote, argv)]) + "`",
    ])
    print(markdown)
    for path in write_results("pair", markdown, None):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
