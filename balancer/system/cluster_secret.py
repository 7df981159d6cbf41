"""The cluster secret: made (or read) by launch.py, handed to HAProxy and every part in the environment.

Workers and the worker queue refuse requests without it (``webui.cluster_secret``; HAProxy's
``worker_queue`` frontend), so that another user of the machine cannot run jobs on the GPUs around the
public site's login and limits. With ``cluster_secret_file`` in the cluster file every host reads the same
secret from there; without, the balancer host makes a new one at each start, written to the run directory
(``CLUSTER_SECRET_FILE``, mode 600) for local tools, and a node host's parts check none (mutual TLS, where
configured, is their gate); where web fronts on node hosts reach the worker queue over plain HTTP, a shared
file is needed, and without one nothing is checked (as before; the log says so). It goes to children
through ``CLUSTER_SECRET_ENV`` in the environment built for them (``children_env``), never a command line;
launch.py's own environment is left as it was.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.system.run_dir import write_private_file
from webui.contract import CLUSTER_SECRET_ENV, CLUSTER_SECRET_FILE

logger = logging.getLogger(__name__)

MIN_LENGTH = 16
"""Shortest secret taken from a file (characters)."""


def read_secret_file(path: Path) -> str:
    """The secret in the first line of ``path``, a file of this user's closed to others."""
    try:
        info = os.stat(path)
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ClusterConfigError(f"cluster_secret_file {path}: {exc.strerror}") from None
    if info.st_mode & 0o077:
        raise ClusterConfigError(f"cluster_secret_file {path}: open to other users; 'chmod 600' it")
    secret = lines[0].strip() if lines else ""
    if len(secret) < MIN_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise ClusterConfigError(f"cluster_secret_file {path}: the first line must be at least {MIN_LENGTH} "
                                 "printable characters without spaces (e.g. from 'openssl rand -hex 32')")
    return secret


def prepare_cluster_secret(spec: ClusterSpec, node_host: bool = False) -> str | None:
    """This host's cluster secret (written to the run directory), for ``children_env``.

    ``node_host``: a node host, which has a secret only from ``cluster_secret_file``. None (nothing checked,
    said in the log) where web fronts on node hosts would need a shared one and there is none."""
    if spec.cluster_secret_file is not None:
        secret: str | None = read_secret_file(spec.cluster_secret_file)
    elif node_host:
        secret = None
    elif spec.needs_shared_secret:
        logger.warning("the worker queue and the workers take jobs from anyone who reaches them: web fronts on "
                       "node hosts send jobs over plain HTTP and no cluster_secret_file is shared with them; set "
                       "one (the same file on every host) or serve the worker queue over TLS (tls)")
        secret = None
    else:
        secret = secrets.token_urlsafe(32)
    if secret is not None:
        write_private_file(spec.run_dir / CLUSTER_SECRET_FILE, secret + "\n")
    return secret


def children_env(secret: str | None, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of the processes this host starts (HAProxy, the parts): ``base`` with this cluster's
    secret, none when ``secret`` is None (not one ``base`` happens to carry)."""
    env = {key: value for key, value in base.items() if key != CLUSTER_SECRET_ENV}
    if secret is not None:
        env[CLUSTER_SECRET_ENV] = secret
    return env


def read_cluster_secret(run_dir: Path) -> str | None:
    """The secret a running cluster wrote to its run directory (local tools that call workers), or None."""
    try:
        return (run_dir / CLUSTER_SECRET_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
