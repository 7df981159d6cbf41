"""The cluster's private certificate authorities and what they issue (``python -m balancer.multihost.certs`` runs
them; ``balancer.multihost.part_tls`` makes a host's throwaway one): EC P-256 keys, SHA-256 signatures, a CA that
signs leaves only (path length 0), leaves with the extended key usages their role needs and nothing more.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


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


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` with mode 0600; an existing file only with ``force``, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
