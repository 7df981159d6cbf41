"""HAProxy alone, in front of node processes the caller runs: a cluster description on free ports, its
rendered ``haproxy.cfg`` and the HAProxy process, stopped when the block ends.

For tests and benchmarks whose subject is HAProxy's side (TLS to the nodes, streaming, retries,
supervision by a sidecar started apart): ``LaunchedCluster`` when ``launch.py`` should run it all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from balancer.config.cluster import ClusterSpec
from balancer.haproxy.config import render_config
from balancer.haproxy.process import HAProxyProcess, RuntimeAPI, validate_config, write_config
from bench.harness.processes import TEARDOWN_GRACE, free_port
from bench.harness.waiting import wait_until

logger = logging.getLogger(__name__)

STATS_PASSWORD = "test-stats-pw"
"""The stats (and sidecar operator) password of every ``cluster_data`` description."""


def cluster_data(run_dir: Path, web_names: list[str], worker_names: list[str], **extra: Any) -> dict[str, Any]:
    """A cluster description on free loopback ports (nodes unmanaged: the caller runs them), without the jobs
    service (no sidecar here runs HAProxy, which is what starts it; ``extra`` may turn it on)."""
    nodes: dict[str, dict[str, Any]] = {}
    for name in web_names:
        nodes.setdefault(name, {"name": name, "managed": False})["web"] = {"port": free_port()}
    for name in worker_names:
        nodes.setdefault(name, {"name": name, "managed": False})["worker"] = {"port": free_port()}
    return {
        "run_dir": str(run_dir),
        "public": {"port": free_port()},
        "worker_queue": {"port": free_port()},
        "stats": {"port": free_port(), "password": STATS_PASSWORD},
        "sidecar": {"port": free_port()},
        "jobs": {"port": free_port(), "enabled": False},
        "nodes": list(nodes.values()),
        **extra,
    }


@contextlib.contextmanager
def running_haproxy(spec: ClusterSpec, log_path: Path | None = None, edit: Callable[[str], str] | None = None,
                    validate: bool = False) -> Iterator[HAProxyProcess]:
    """HAProxy on ``spec``'s rendered config (``edit``: a change to the text, for a comparison), stopped after
    (its soft stop given ``TEARDOWN_GRACE``, not 5 s: a node's open connection through it held it that long).

    ``validate``: ``haproxy -c`` the file first. The log goes to ``log_path`` (default: the run dir).
    """
    config = render_config(spec)
    path = write_config(edit(config) if edit else config, spec.config_path)
    if validate:
        validate_config(path)
    haproxy = HAProxyProcess(path, spec.socket_path, log_path or spec.run_dir / "haproxy.log")
    haproxy.start()
    try:
        yield haproxy
    finally:
        haproxy.stop(TEARDOWN_GRACE)


def wait_servers_up(spec: ClusterSpec, servers: list[tuple[str, str]], alive: Callable[[], bool] = lambda: True,
                    timeout: float = 180) -> None:
    """Wait until HAProxy shows each ``(backend, server)`` UP; ``alive()`` False (a node exited) fails at once."""
    api = RuntimeAPI(spec.socket_path)

    def up() -> bool:
        if not alive():
            raise RuntimeError(f"a node process exited before HAProxy saw {servers} UP")
        return all(api.server(backend, server).is_up for backend, server in servers)

    wait_until(up, f"{servers} UP in HAProxy", timeout, interval=0.2)
