"""Balancer hosts that share one job store back each other's jobs service up.

With a floating address (several balancer hosts) and a PostgreSQL store, every balancer's jobs service sees
every job, so any of them can answer ``/v1/jobs`` for any balancer: the others' services become ``backup``
servers of this HAProxy's ``jobs`` backend (``jobs.backups``), used only while this host's own is down or
crash-looping. Each service then listens on its balancer's own address (``balancers[].address``), where the
other balancers reach it; it still serves only requests that carry the cluster secret, which every balancer
shares. With ``tls`` that secret must not cross the network in the clear: the service keeps its loopback plain
HTTP listener for its own HAProxy and adds one with mutual TLS on that address (``jobs.peer_host``), which
accepts only balancers (client certificates of the cluster CA; node certificates are server-only), and the
backups are reached with the balancer's own certificate, theirs checked. With SQLite each balancer keeps its
own jobs, and a peer would not know them: no backups then.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID

from balancer.config.basics import ClusterConfigError
from balancer.config.cluster import ClusterSpec
from balancer.config.jobs_service import JOBS_STORE_URL_ENV, JobsSpec
from balancer.config.nodes import BalancerHostSpec


def store_is_shared(jobs: JobsSpec, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the jobs service's store is PostgreSQL, which every balancer (or pod) shares; SQLite is a file only
    one sees. ``environ``'s URL, where given, wins over the cluster file's."""
    url = (environ or {}).get(JOBS_STORE_URL_ENV) or jobs.store_url or ""
    return url.startswith("postgresql")


def with_jobs_peers(spec: ClusterSpec, me: BalancerHostSpec, environ: Mapping[str, str]) -> ClusterSpec:
    """``spec`` as balancer ``me`` runs it: with a shared store and no ``jobs.backups`` of the operator's, the
    other balancers' services are its backups, and its own listens where they reach it: on ``me``'s address
    (with ``tls``: a second, mutual-TLS listener there, the first staying on loopback)."""
    jobs = spec.jobs
    if not jobs.enabled or jobs.backups or not store_is_shared(jobs, environ):
        return spec
    peers = {peer.name: f"{peer.address}:{jobs.port}" for peer in spec.balancers if peer.name != me.name}
    where = {"peer_host": jobs.peer_host or me.address} if spec.tls is not None else {"host": me.address}
    return spec.model_copy(update={"jobs": jobs.model_copy(update={**where, "backups": peers})})


def peer_cert_name(spec: ClusterSpec) -> str:
    """With ``tls``: the name the backups' certificates must carry (``jobs.peer_cert_name``, else the common name
    of this balancer's own certificate, which a pair may share); ``ClusterConfigError`` when it cannot be read."""
    assert spec.tls is not None
    if spec.jobs.peer_cert_name:
        return spec.jobs.peer_cert_name
    path = spec.tls.cert_file
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        [name] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError) as error:
        raise ClusterConfigError(f"tls.cert_file: cannot read the name in {path} ({error}); set "
                                 "jobs.peer_cert_name to the name in the other balancers' certificates") from error
    return str(name.value)
