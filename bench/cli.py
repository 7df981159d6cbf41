"""What every benchmark command shares: its flags, the command that reruns it, signal handling."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys

from bench.harness.cluster_options import ClusterOptions
from bench.harness.netns import missing_for_labs


def benchmark_parser(prog: str, doc: str, steps: int, size: int) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark has: the cluster's, ``--steps`` and ``--size``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ClusterOptions.add_arguments(parser)
    parser.add_argument("--steps", type=int, default=steps, help="Denoising steps per job.")
    parser.add_argument("--size", type=int, default=size, help="Image width and height in pixels.")
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line); ``args.reproduce`` is the command that reruns it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.reproduce = " ".join([parser.prog, *(shlex.quote(arg) for arg in argv)])
    return args


def prepare_run() -> None:
    """Set up a benchmark process: INFO logging (httpx quiet), SIGTERM -> ``SystemExit``.

    ``SystemExit`` makes ``with LaunchedCluster(...)`` stop the cluster, as Ctrl-C
    (``KeyboardInterrupt``) does; the node processes run in their own sessions, so without
    this a terminated benchmark would leave them running.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def prepare_lab_run() -> None:
    """``prepare_run`` for a benchmark of network namespaces: exits with one line where they cannot be made
    (not root, no ``ip``/``iptables``); the lab's processes load no model from the hub."""
    reason = missing_for_labs()
    if reason:
        raise SystemExit(f"error: {reason}")
    prepare_run()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
