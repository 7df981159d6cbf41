"""The test processes' httpx clients share one default TLS context (``bench.harness.shared_ssl``, installed by
``tests/conftest.py``); a client that names its own keeps it."""

from __future__ import annotations

import ssl

import httpx


def context_of(client: httpx.Client) -> ssl.SSLContext:
    return client._transport._pool._ssl_context  # type: ignore[attr-defined]


def test_clients_without_a_verify_of_their_own_share_one_context() -> None:
    with httpx.Client() as first, httpx.Client() as second:
        assert context_of(first) is context_of(second)
        assert context_of(first).verify_mode == ssl.CERT_REQUIRED  # still the default, verifying context
    own = ssl.create_default_context()
    with httpx.Client(verify=own) as mine, httpx.Client(verify=False) as unverified, httpx.Client() as default:
        assert context_of(mine) is own
        assert context_of(unverified) is not context_of(default)
        assert context_of(unverified).verify_mode == ssl.CERT_NONE
