"""Balancer hosts that share one job store back each other's jobs service up.

With a floating address (several balancer hosts) and a PostgreSQL store, every balancer's jobs service sees
every job, so any of them can answer ``/v1/jobs`` for any balancer: the others' services become ``backup``
servers of this HAProxy's ``jobs`` backend (``jobs.backups``), used only while this host's own is down or
crash-looping. Each service then listens on its balancer's own address (``balancers[].address``), where the
other balancers reach it; it still serves only requests that carry the cluster secret, which every balancer
shares. With SQLite each balancer keeps its own jobs, and a peer would not know them: no backups then. With
``tls`` neither: the jobs service speaks plain HTTP, and the secret must not cross the network in the clear there.
"""

from __future__ import annotations

from collections.abc import Mapping

from balancer.config.cluster import BalancerHostSpec, ClusterSpec
from balancer.config.sections import JOBS_STORE_URL_ENV, JobsSpec


def store_is_shared(jobs: JobsSpec, environ: Mapping[str, str]) -> bool:
    """Whether the jobs service's store is PostgreSQL (the environment's URL wins over the cluster file's)."""
    url = environ.get(JOBS_STORE_URL_ENV) or jobs.store_url or ""
    return url.startswith("postgresql")


def with_jobs_peers(spec: ClusterSpec, me: BalancerHostSpec, environ: Mapping[str, str]) -> ClusterSpec:
    """``spec`` as balancer ``me`` runs it: with a shared store, no ``tls`` and no ``jobs.backups`` of the
    operator's, its jobs service listens on ``me``'s address and the other balancers' services are its backups."""
    jobs = spec.jobs
    if not jobs.enabled or jobs.backups or spec.tls is not None or not store_is_shared(jobs, environ):
        return spec
    peers = {peer.name: f"{peer.address}:{jobs.port}" for peer in spec.balancers if peer.name != me.name}
    return spec.model_copy(update={"jobs": jobs.model_copy(update={"host": me.address, "backups": peers})})
