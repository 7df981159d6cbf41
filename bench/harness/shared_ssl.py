"""One TLS context for every httpx client of a test or benchmark process that names no ``verify`` of its own.

httpx builds a new ``ssl.SSLContext`` for each client, parsing certifi's CA bundle again (about 20 ms of CPU), and
``httpx.get`` makes a client per call: py-spy found 60 % of a test process's CPU there. The default context is
made once instead (a context is safe to share; clients that pass ``verify`` or ``cert`` keep theirs). Servers
never need this: they keep their clients.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

from httpx._transports import default as transport

_create_ssl_context = transport.create_ssl_context


@functools.cache
def _default_context(trust_env: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default context for these settings (``SSL_CERT_FILE``/``SSL_CERT_DIR`` count with ``trust_env``)."""
    return _create_ssl_context(trust_env=trust_env)


def _shared_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    if verify is True and cert is None:
        return _default_context(trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


def install() -> None:
    """Make httpx clients of this process share the default context (idempotent)."""
    transport.create_ssl_context = _shared_ssl_context
