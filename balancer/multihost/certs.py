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
import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from balancer.config.access import QUEUE_CA_CERT, QUEUE_SUFFIX

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
QUEUE_CA_KEY = "queue-ca.key"
CA_DAYS = 3650
"""The CA's validity (ten years): rotating it means reissuing every certificate."""
LEAF_DAYS = 825
"""A balancer's or node's validity (the longest browsers accept; nothing here needs more)."""

LOOPBACK = "127.0.0.1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


class CertError(ValueError):
    """Bad input or a file that would be overwritten; the message says which."""


@dataclass(frozen=True)
class Identity:
    """A certificate to issue: its name (CN, file name) and subject alternative names."""

    name: str
    dns: tuple[str, ...]
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]

    @classmethod
    def parse(cls, text: str) -> Identity:
        """``NAME`` or ``NAME=SAN,SAN``; each SAN an IP address or a DNS name."""
        name, _, extra = text.partition("=")
        if not _NAME.match(name):
            raise CertError(f"{text!r}: NAME must be a host name (letters, digits, '.', '-')")
        dns, ips = [name], []
        for san in filter(None, (part.strip() for part in extra.split(","))):
            try:
                ips.append(ipaddress.ip_address(san))
            except ValueError:
                if not _NAME.match(san):
                    raise CertError(f"{text!r}: {san!r} is neither an IP address nor a DNS name") from None
                dns.append(san)
        return cls(name, tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))

    def with_loopback(self) -> Identity:
        """Also ``localhost`` and ``127.0.0.1``: web fronts on the balancer's own host reach its worker queue so."""
        return Identity(self.name, tuple(dict.fromkeys((*self.dns, "localhost"))),
                        tuple(dict.fromkeys((*self.ips, ipaddress.ip_address(LOOPBACK)))))

    def alt_names(self) -> list[x509.GeneralName]:
        """The SAN extension's entries."""
        return [*(x509.DNSName(name) for name in self.dns), *(x509.IPAddress(ip) for ip in self.ips)]


class CertificateAuthority:
    """The cluster's private CA: a key and a self-signed certificate that sign the others."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, name: str) -> CertificateAuthority:
        """A new CA called ``name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = _builder(subject, subject, key.public_key(), CA_DAYS)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        return cls(key, builder.sign(key, hashes.SHA256()))

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> CertificateAuthority:
        """The CA kept in these files."""
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CertError(f"cannot read the CA {cert_path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CertError(f"{key_path} is not the key of {cert_path}")
        return cls(key, cert)

    def issue(self, identity: Identity, usages: Sequence[x509.ObjectIdentifier]) -> tuple[bytes, bytes]:
        """A certificate for ``identity`` with these extended key usages: (certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)])
        builder = _builder(subject, self.cert.subject, key.public_key(), LEAF_DAYS)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName(identity.alt_names()), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
        )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


BALANCER_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)
"""A balancer calls the nodes (client) and serves the worker queue to remote web fronts (server)."""
NODE_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH,)
"""A node only serves: with no client-auth usage, its key cannot open a connection to another node."""
QUEUE_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH,)
"""A web front's queue certificate only calls the worker queue."""


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` with mode 0600; an existing file only with ``force``, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


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
        write_private(key_path, _key_pem(ca.key), self.force)
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
