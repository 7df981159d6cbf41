"""What every portrait-ha process's settings share: reading them from the command line, the cache
directories, and TLS on a node's listener and towards the worker queue (``webui.settings`` has the node's own
settings, ``jobs.settings`` the jobs service's)."""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp


def settings_problems(exc: ValidationError) -> str:
    """One line naming each invalid setting, what is wrong and the value given (no traceback); a problem
    of several settings together is its message alone."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" if e["loc"] else
        e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )


AnySettings = TypeVar("AnySettings", bound=BaseSettings)


def settings_from_cli(settings_class: type[AnySettings], argv: list[str] | None, program: str) -> AnySettings | None:
    """A process's settings from its command line and ``PORTRAIT_*``; None after one line on stderr naming each
    invalid setting (the process then exits 2)."""
    try:
        return CliApp.run(settings_class, cli_args=argv)
    except ValidationError as exc:
        print(f"{program}: invalid setting: {settings_problems(exc)}", file=sys.stderr)
        return None


def default_cache_dir() -> Path:
    """Where the offline demo model and other generated files are kept."""
    return Path(os.environ.get("PORTRAIT_CACHE_DIR", Path.home() / ".cache" / "portrait-ha"))


COMPILE_CACHE_ENV = "PORTRAIT_COMPILE_CACHE_DIR"
"""The worker setting ``compile_cache_dir`` as an environment variable (the sidecar sets it)."""


def default_compile_cache_dir() -> Path:
    """This host's compile cache, shared by all its workers (``webui.worker.compile_cache``)."""
    return default_cache_dir() / "compile"


def _existing_file(path: Path | None) -> Path | None:
    """A file setting's check: unset, or a file that exists."""
    if path is not None and not path.is_file():
        raise ValueError("not a file")
    return path


class ServerTLSSettings(BaseSettings):
    """Mutual TLS on a node's own listener (for a balancer on another host; plain HTTP when unset)."""

    tls_cert: Path | None = Field(
        None,
        description="PEM file with this node host's certificate and private key (python -m balancer.multihost.certs): "
        "serve HTTPS and accept only clients with a certificate from --tls-ca (the balancers). "
        "Unset: plain HTTP (loopback).",
    )
    tls_ca: Path | None = Field(None, description="The cluster's CA certificate (ca.crt); required with --tls-cert.")

    _check_files = field_validator("tls_cert", "tls_ca")(_existing_file)

    @model_validator(mode="after")
    def _check_tls(self) -> ServerTLSSettings:
        if (self.tls_cert is None) != (self.tls_ca is None):
            raise ValueError("--tls-cert and --tls-ca go together: give both (mutual TLS) or neither (plain HTTP)")
        return self

    def uvicorn_tls(self) -> dict[str, object]:
        """uvicorn's keyword arguments for this listener: client certificates required, or nothing.

        Every client then passed the certificate check, so it is a balancer: its ``X-Forwarded-For``
        and ``X-Forwarded-Proto`` (the public client's address and scheme) are trusted from any address.
        """
        if self.tls_cert is None:
            return {}
        return {"ssl_certfile": str(self.tls_cert), "ssl_ca_certs": str(self.tls_ca),
                "ssl_cert_reqs": ssl.CERT_REQUIRED, "forwarded_allow_ips": "*"}


class QueueClientSettings(BaseSettings):
    """How a node part reaches an https worker queue (the balancer on another host)."""

    worker_queue_ca: Path | None = Field(
        None, description="CA certificate that signed an https worker queue's certificate (the cluster's ca.crt); "
        "default: the system's CAs.",
    )
    worker_queue_cert: Path | None = Field(
        None, description="PEM file with the client certificate and key this part presents to an https worker "
        "queue (its host's NAME-queue.pem from python -m balancer.multihost.certs: the balancer's worker queue "
        "accepts only those). Unset: none.",
    )

    _check_queue_files = field_validator("worker_queue_ca", "worker_queue_cert")(_existing_file)
