"""The jobs service (``python -m jobs``, docs/jobs.md) in the Kubernetes manifests: its container and Secrets.

Stateless but for the job store, it runs as a Deployment (``--jobs`` pods, 2 by default) behind a headless
Service whose ready pods fill the ``server-template`` slots of HAProxy's ``jobs`` backend: every pod serves
``/v1/jobs`` and dispatches to the worker queue, as balancer hosts sharing one store do. Pods that share jobs must
share the store, so more than one pod needs PostgreSQL (``check_store``). What every pod must hold alike comes
from Secrets the operator creates, never from the manifests:

- ``portrait-jobs-store`` (key ``url``): the whole store URL, password included (``PORTRAIT_JOBS_STORE_URL``);
- ``portrait-jobs-keys`` (keys ``webhook-secret``, ``share-key``): files mounted read-only, the webhook signing
  secret and the share-link key (any pod may sign what another checks);
- ``portrait-cluster`` (key ``secret``): the cluster secret, in every part's environment as on a balancer host
  (HAProxy adds it to what it passes on; the jobs service refuses requests without it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.config.jobs_peers import store_is_shared
from balancer.config.jobs_service import JOBS_STORE_URL_ENV
from balancer.operations.parts import jobs_command, replace_flag
from webui.contract import CLUSTER_SECRET_ENV

JOBS = "portrait-jobs"
STORE_SECRET, KEYS_SECRET, CLUSTER_SECRET = "portrait-jobs-store", "portrait-jobs-keys", "portrait-cluster"
KEYS_DIR = Path("/etc/portrait-ha/jobs")
"""Where ``portrait-jobs-keys`` is mounted (read-only)."""
WEBHOOK_SECRET_KEY, SHARE_KEY_KEY = "webhook-secret", "share-key"
SECRET_FILE_MODE = 0o440
"""Secret files: readable by the pod's group (``fsGroup``), never written."""
JOBS_START_TIMEOUT = 120.0
"""Seconds a jobs pod may take to serve (imports, the store's migrations) before its liveness probe counts."""


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """An environment variable taken from a Secret's key (the value never appears in the manifests)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def cluster_secret_env() -> dict[str, Any]:
    """The cluster secret, for every part (``webui.cluster_secret``; HAProxy's ``${PORTRAIT_CLUSTER_SECRET}``)."""
    return secret_env(CLUSTER_SECRET_ENV, CLUSTER_SECRET, "secret")


def check_store(spec: ClusterSpec, replicas: int) -> None:
    """Refuse several jobs pods on SQLite: each would keep its own jobs, which the others never see."""
    if replicas > 1 and not store_is_shared(spec.jobs):
        raise ClusterConfigError(
            f"jobs.store_url: {replicas} jobs service pods must share one PostgreSQL store "
            "(postgresql+psycopg://USER@HOST/DB), not SQLite, where each pod keeps its own jobs; set it in the "
            "cluster file, or render with --jobs 1.")


def jobs_args(spec: ClusterSpec, queue_url: str, workers: int, replicas: int) -> list[str]:
    """``python -m jobs``'s flags as a balancer host's sidecar gives them (``jobs_command``), with the queue
    Service, the pods' share of the workers (each pod keeps that many busy) and the key files of the Secret."""
    args = jobs_command(spec)[3:]  # without the local interpreter's "python -m jobs"
    slots = spec.jobs.dispatch_slots or max(1, math.ceil(workers / replicas))
    args = replace_flag(replace_flag(args, "--worker-queue-url", queue_url), "--dispatch-slots", str(slots))
    return [*args, "--webhook-secret-file", str(KEYS_DIR / WEBHOOK_SECRET_KEY),
            "--share-key-file", str(KEYS_DIR / SHARE_KEY_KEY)]


def jobs_env(spec: ClusterSpec) -> list[dict[str, Any]]:
    """The cluster secret, and the store's URL from its Secret when it is PostgreSQL (SQLite: the run directory)."""
    store = [secret_env(JOBS_STORE_URL_ENV, STORE_SECRET, "url")] if store_is_shared(spec.jobs) else []
    return [{"name": "PYTHONUNBUFFERED", "value": "1"}, cluster_secret_env(), *store]


def jobs_volumes() -> list[dict[str, Any]]:
    """The key files (read-only, the same on every pod), the run directory and /tmp (the root is read-only)."""
    files = [{"key": key, "path": key} for key in (WEBHOOK_SECRET_KEY, SHARE_KEY_KEY)]  # a missing key: not started
    return [
        {"name": "keys", "secret": {"secretName": KEYS_SECRET, "defaultMode": SECRET_FILE_MODE, "items": files}},
        {"name": "run", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]


def jobs_mounts(run_dir: Path) -> list[dict[str, Any]]:
    return [{"name": "keys", "mountPath": str(KEYS_DIR), "readOnly": True},
            {"name": "run", "mountPath": str(run_dir)}, {"name": "tmp", "mountPath": "/tmp"}]
