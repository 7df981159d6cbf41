"""Mutual TLS on a node host: its parts serve HTTPS to the balancers only, and its sidecar still probes them.

With ``tls`` in the cluster file, every worker and web front of a node host serves with that host's
certificate (``python -m balancer.multihost.certs --node NAME``: *server auth* only) and asks each client for
a certificate (uvicorn's client-certificate check, ``--tls-cert``/``--tls-ca``). The balancers
present theirs (*client auth*, from the cluster CA). The host's own sidecar must probe the parts
too, and it is not a balancer.

Why not give node hosts a client certificate from the cluster CA: every node of every host would
accept it, so one stolen node-host key could call any other host's workers and web fronts
directly (around the balancer's limits and login). Instead each node-host sidecar makes, at every
start, a **probe CA** of its own: a throwaway CA whose key signs one client certificate for the
sidecar (``RUN_DIR/tls/probe.pem``) and is then dropped, never written. This host's parts trust the
cluster CA plus this probe CA (``RUN_DIR/tls/parts-ca.pem``, their ``--tls-ca``); no other host
trusts it, and nobody can sign more with it. The probe checks the part's certificate like HAProxy
does: signed by the cluster CA, naming the node host (``NodeSpec.tls_name``). Both files are 0600
in the private run directory, and are made again, with a new key, when the sidecar restarts (the
parts it starts then get the new bundle).
"""

from __future__ import annotations

import logging
import ssl

from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from balancer.config.cluster import ClusterSpec
from balancer.config.nodes import NodeHostSpec
from balancer.multihost.authority import CertificateAuthority, Identity, write_private
from balancer.supervision.part_probe import ProbeTLS
from balancer.system.run_dir import private_dir

logger = logging.getLogger(__name__)

TLS_DIR = "tls"
"""Under the run directory: the probe's certificate and the parts' CA bundle."""
PROBE_CERT = "probe.pem"
PARTS_CA = "parts-ca.pem"


class NodeHostTLS:
    """A node host's TLS files: its parts' flags, and its sidecar's probe identity (see the module doc)."""

    def __init__(self, spec: ClusterSpec, host: NodeHostSpec) -> None:
        assert spec.tls is not None
        self.host = host
        self.server_cert = spec.node_host_cert(host)
        self.cluster_ca = spec.tls.ca_file
        directory = spec.run_dir / TLS_DIR
        self.probe_cert = directory / PROBE_CERT
        self.parts_ca = directory / PARTS_CA

    @classmethod
    def prepare(cls, spec: ClusterSpec, host: NodeHostSpec) -> NodeHostTLS | None:
        """With ``tls``: this node host's files, the probe CA made anew; None without ``tls``.
        ``ClusterConfigError`` when the host's certificate is missing, ``OSError`` when writing fails."""
        if spec.tls is None:
            return None
        spec.check_own_certificate(host)
        tls = cls(spec, host)
        tls._issue_probe_identity()
        return tls

    def _issue_probe_identity(self) -> None:
        ca = CertificateAuthority.create(f"{self.host.name} sidecar probe CA (throwaway)")
        cert, key = ca.issue(Identity.parse(f"{self.host.name}-sidecar"), (ExtendedKeyUsageOID.CLIENT_AUTH,))
        private_dir(self.probe_cert.parent)
        write_private(self.probe_cert, cert + key, force=True)
        bundle = self.cluster_ca.read_bytes().rstrip(b"\n") + b"\n" + ca.cert.public_bytes(serialization.Encoding.PEM)
        write_private(self.parts_ca, bundle, force=True)
        logger.info("node host %s: parts serve mutual TLS with %s; sidecar probes with a throwaway CA (%s)",
                    self.host.name, self.server_cert, self.parts_ca)

    def server_args(self) -> list[str]:
        """A part's flags: serve with the host's certificate, accept the balancers and this sidecar."""
        return ["--tls-cert", str(self.server_cert), "--tls-ca", str(self.parts_ca)]

    def probe(self, server_name: str) -> ProbeTLS:
        """The probe's TLS for a part whose certificate must name ``server_name``."""
        context = ssl.create_default_context(cafile=str(self.cluster_ca))
        context.load_cert_chain(str(self.probe_cert))
        return ProbeTLS(context, server_name)

