"""The gauge ``portrait_sidecar_certificate_expiry_timestamp_seconds{file}``: when each certificate this balancer
serves or trusts (the cluster file's ``tls`` section) stops being valid, read from the files at scrape time, so a
renewed file shows at the next scrape. A file that cannot be read has no series and is logged."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer.config.access import TLSSpec

logger = logging.getLogger(__name__)

NAME = "portrait_sidecar_certificate_expiry_timestamp_seconds"


def tls_files(tls: TLSSpec | None) -> list[Path]:
    """The certificate files the ``tls`` section names (none without one)."""
    if tls is None:
        return []
    return [path for path in (tls.ca_file, tls.cert_file, tls.queue_ca_file, tls.queue_cert_file) if path is not None]


def not_after(path: Path) -> float:
    """The Unix time the first certificate in ``path`` (a PEM file, a key beside it allowed) expires."""
    certificate = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return certificate.not_valid_after_utc.timestamp()


class CertificateCollector(Collector):
    """Each certificate file's expiry, as a Unix timestamp (alert on ``… - time() < 14 * 86400``)."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.files = list(files)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, "Unix time the certificate in this file stops being valid.", labels=["file"])
        for path in self.files:
            try:
                family.add_metric([str(path)], not_after(path))
            except (OSError, ValueError) as error:
                logger.warning("metrics: cannot read the certificate in %s: %s", path, error)
        if self.files:
            yield family
