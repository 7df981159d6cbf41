"""``python -m balancer.multihost.certs``: the certificates for mutual TLS between balancers and nodes.

One private CA signs every certificate of a cluster:

- a **balancer** certificate per balancer host (``--balancer NAME``): extended key usage
  *client auth* (it calls the nodes) and *server auth* (it serves the worker queue, also to
  web fronts on its own host: ``localhost`` and ``127.0.0.1`` are always among its SANs);
- a **node** certificate per GPU host (``--node NAME``): *server auth* only, so a node's key
  cannot be used to call another node; nodes accept only clients whose certificate says
  *client auth*, i.e. the balancers. (A node host's sidecar probes its own parts with a
  certificate of a throwaway CA that only that host trusts: ``balancer.multihost.part_tls``.)

A second private CA, the **queue CA**, signs one *client auth* certificate per balancer and node
host (``NAME-queue.pem``): the web fronts of that host present it to the balancer's worker queue,
which accepts no other client (HAProxy's ``ca-file queue-ca.crt verify required``). No node trusts
the queue CA, so a stolen queue certificate opens only the worker queue, which is exactly what a
web front may do; a stolen node or balancer certificate does not open the queue.

A pair of balancers may share one certificate naming the floating address (the web fronts reach
the worker queue there): one run then makes everything a pair and its node hosts need.

Each NAME may carry extra subject alternative names: ``--node gpu1=10.0.0.21,gpu1.lan``
(IP addresses become IP SANs, anything else DNS SANs; NAME itself is always a DNS SAN and the
common name). Output, in ``--out``: ``ca.crt`` (give it to every host), ``ca.key`` (keep it
offline: it signs new certificates), ``NAME.pem`` per balancer or node (its certificate and
private key in one file: HAProxy's ``crt``, a node's ``--tls-cert``), ``queue-ca.crt`` (the
balancers only), ``queue-ca.key`` (offline) and ``NAME-queue.pem`` per balancer or node (its web
fronts' ``--worker-queue-cert``). Every file is written 0600, never over an existing one
(``--force`` replaces them); existing CAs in ``--out`` are reused, so that hosts can be added
later (a directory made before the queue CA existed gets one).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from balancer.config.access import QUEUE_CA_CERT, QUEUE_SUFFIX
from balancer.multihost.authority import (
    BALANCER_USAGES,
    NODE_USAGES,
    QUEUE_USAGES,
    CertError,
    CertificateAuthority,
    Identity,
    key_pem,
    write_private,
)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
QUEUE_CA_KEY = "queue-ca.key"


@dataclass(frozen=True)
class Plan:
    """What one run issues, into which directory."""

    out: Path
    balancers: tuple[Identity, ...]
    nodes: tuple[Identity, ...]
    ca_name: str = "portrait-ha cluster CA"
    force: bool = False

    @property
    def queue_ca_name(self) -> str:
        """The queue CA's common name."""
        return f"{self.ca_name} (worker queue)"

    def _new_cas(self) -> list[tuple[str, str]]:
        """(key, certificate) file names of the CAs this run makes: those not in ``out`` yet (all with force)."""
        pairs = [(CA_KEY, CA_CERT), (QUEUE_CA_KEY, QUEUE_CA_CERT)]
        return [pair for pair in pairs if self.force or not (self.out / pair[0]).exists()]

    def targets(self, new_cas: list[tuple[str, str]]) -> list[Path]:
        """Every file this run writes."""
        names = [name for identity in (*self.balancers, *self.nodes)
                 for name in (f"{identity.name}.pem", f"{identity.name}{QUEUE_SUFFIX}.pem")]
        return [self.out / name for name in [*(name for pair in new_cas for name in pair), *names]]

    def issue(self) -> list[Path]:
        """Create (or reuse) the CAs and issue every certificate; the paths written."""
        names = [identity.name for identity in (*self.balancers, *self.nodes)]
        if not names:
            raise CertError("nothing to issue: give at least one --balancer or --node")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise CertError(f"names given twice: {', '.join(repeated)}")
        clashes = sorted(name for name in names
                         if name.endswith(QUEUE_SUFFIX) and name.removesuffix(QUEUE_SUFFIX) in names)
        if clashes:
            raise CertError(f"{', '.join(clashes)}: the name of another host's queue certificate; choose another name")
        self.out.mkdir(mode=0o700, parents=True, exist_ok=True)
        new_cas = self._new_cas()
        existing = [path for path in self.targets(new_cas) if path.exists() or path.is_symlink()]
        if existing and not self.force:
            raise CertError(f"would overwrite {', '.join(map(str, existing))} (use --force to replace them)")
        written: list[Path] = []
        ca = self._ca(CA_KEY, CA_CERT, self.ca_name, new_cas, written)
        queue_ca = self._ca(QUEUE_CA_KEY, QUEUE_CA_CERT, self.queue_ca_name, new_cas, written)
        for identities, usages in ((self.balancers, BALANCER_USAGES), (self.nodes, NODE_USAGES)):
            for identity in identities:
                server = identity.with_loopback() if usages is BALANCER_USAGES else identity
                written.append(self._write(f"{identity.name}.pem", ca.issue(server, usages)))
                client = Identity.parse(f"{identity.name}{QUEUE_SUFFIX}")
                written.append(self._write(client.name + ".pem", queue_ca.issue(client, QUEUE_USAGES)))
        return written

    def _ca(self, key_name: str, cert_name: str, common_name: str, new_cas: list[tuple[str, str]],
            written: list[Path]) -> CertificateAuthority:
        """The CA kept in ``key_name``/``cert_name``: loaded, or made and written when it is new."""
        key_path, cert_path = self.out / key_name, self.out / cert_name
        if (key_name, cert_name) not in new_cas:
            return CertificateAuthority.load(key_path, cert_path)
        ca = CertificateAuthority.create(common_name)
        write_private(key_path, key_pem(ca.key), self.force)
        write_private(cert_path, ca.cert.public_bytes(serialization.Encoding.PEM), self.force)
        written += [key_path, cert_path]
        return ca

    def _write(self, name: str, pems: tuple[bytes, bytes]) -> Path:
        path = self.out / name
        write_private(path, pems[0] + pems[1], self.force)
        return path


def main(argv: list[str] | None = None) -> int:
    """Issue the cluster's certificates; exit 0, or 2 with one line on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m balancer.multihost.certs",
        description="Make the private CAs and the certificates for mutual TLS between balancers and nodes "
        "(NAME.pem) and for the web fronts' worker queue (NAME-queue.pem).",
        epilog="Example (a balancer pair sharing floating address 10.0.0.5, two node hosts): python -m "
        "balancer.multihost.certs --out certs --balancer lb=10.0.0.5,10.0.0.10,10.0.0.11 --node gpu1=10.0.0.21 "
        "--node gpu2=10.0.0.22",
    )
    parser.add_argument("--out", type=Path, required=True, help="Directory for the files (created 0700).")
    parser.add_argument("--balancer", action="append", default=[], metavar="NAME[=SAN,...]",
                        help="A balancer host (client certificate for HAProxy, queue certificate for its "
                        "own web fronts; repeatable).")
    parser.add_argument("--node", action="append", default=[], metavar="NAME[=SAN,...]",
                        help="A node host (server certificate for its workers and web fronts, queue "
                        "certificate for its web fronts; repeatable).")
    parser.add_argument("--ca-name", default=Plan.ca_name, help="The CA's common name (new CA only).")
    parser.add_argument("--force", action="store_true", help="Replace existing files, the CA included.")
    args = parser.parse_args(argv)
    try:
        plan = Plan(
            out=args.out,
            balancers=tuple(Identity.parse(text) for text in args.balancer),
            nodes=tuple(Identity.parse(text) for text in args.node),
            ca_name=args.ca_name,
            force=args.force,
        )
        written = plan.issue()
    except (CertError, OSError) as exc:
        print(f"python -m balancer.multihost.certs: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
