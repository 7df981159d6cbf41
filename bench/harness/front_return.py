"""A node host's web front killed and coming back (issue 21): the pieces its tests and ``bench.faults`` share.

A client is pinned to a web front by HAProxy's stickiness cookie (``pinned_headers``), as one that first met that
front keeps it. ``web_front_pid`` finds the front's process in its host's namespace, ``check_failures`` reads how
many of HAProxy's checks of it failed, ``cpu_hogs`` keeps every core busy beside its first calls.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from balancer.haproxy.names import COOKIE_NAME
from bench.harness.hosts_cluster import NODE_HOSTS, HostsCluster

HOGS = 2
"""CPU hogs beside a returned front's first calls: one per core of the machine the suite is sized for."""


def pinned_headers(node: str) -> dict[str, str]:
    """Headers that send every request to ``node``'s web front (its stickiness cookie)."""
    return {"Cookie": f"{COOKIE_NAME}={node}"}


def cmdline(pid: int) -> list[str]:
    """Process ``pid``'s command line (empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def web_front_pid(cluster: HostsCluster, node: str) -> int:
    """The process id of ``node``'s web front, in its node host's namespace."""
    return next(pid for pid in cluster.lab.pids(NODE_HOSTS[node]) if "webui.web" in " ".join(cmdline(pid)))


def check_failures(cluster: HostsCluster, node: str) -> int:
    """How many of HAProxy's checks of ``node``'s web front have failed so far (``chkfail``)."""
    return next(int(row["chkfail"]) for row in cluster.api.show_stat()
                if row["pxname"] == "webs" and row["svname"] == node)


@contextmanager
def cpu_hogs(count: int = HOGS) -> Iterator[None]:
    """``count`` processes that spin on a core each for the block's length (killed after it, also on failure)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
