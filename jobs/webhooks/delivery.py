"""One webhook delivery attempt: POST the signed body to a vetted address and record what happened.

The target is resolved and vetted first (``TargetGuard.resolve``); the request then goes to the vetted address
itself: the URL's host is replaced by the address, the ``Host`` header keeps the original name, and for https the
``sni_hostname`` request extension (httpx/httpcore) makes TLS send and verify the host name. No redirect is
followed, no proxy from the environment is used, and no connection is kept for another request. A receiver's
failure never raises: it comes back as an ``Attempt`` with the error in words.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import anyio
import httpx

from .addresses import IPAddress
from .signing import WebhookSigner
from .targets import ResolutionFailed, TargetGuard, TargetRefused, VettedTarget

logger = logging.getLogger(__name__)

Outcome = Literal["delivered", "failed", "refused"]
"""delivered: a 2xx answer; failed: try again later; refused: the target is not allowed (do not retry)."""


@dataclass(frozen=True)
class DeliveryLimits:
    connect_s: float = 5.0
    read_s: float = 10.0
    total_s: float = 15.0
    max_response_bytes: int = 64 * 1024
    """At most this much of the receiver's answer is read (then dropped); it is never kept."""


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as the delivery log shows it."""

    at: datetime
    outcome: Outcome
    status_code: int | None
    error: str | None
    latency_ms: float
    address: str | None = None
    """The address connected to (None when nothing was)."""

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


def utc_now() -> datetime:
    return datetime.now(UTC)


def tls_cause(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``error`` (httpx wraps httpcore's error, which wraps the ``ssl`` one), or None."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    return cause


def error_words(error: httpx.HTTPError, limits: DeliveryLimits) -> str:
    """What went wrong with the receiver, in words for the delivery log."""
    if isinstance(error, httpx.ConnectTimeout):
        return f"could not connect within {limits.connect_s:g} s"
    if isinstance(error, httpx.ConnectError):
        if (tls := tls_cause(error)) is not None:
            return f"TLS handshake failed ({getattr(tls, 'verify_message', None) or tls.reason or tls})"
        return "could not connect (connection refused or unreachable)"
    if isinstance(error, httpx.ReadTimeout):
        return f"no answer within {limits.read_s:g} s"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the receiver closed the connection or broke the HTTP protocol"
    return f"{type(error).__name__}: {error}"


class WebhookSender:
    """Sends one signed webhook at a time through a ``TargetGuard``; use as ``async with`` (or ``aclose``)."""

    def __init__(self, guard: TargetGuard, signer: WebhookSigner, limits: DeliveryLimits | None = None,
                 verify: ssl.SSLContext | bool = True, clock: Callable[[], datetime] = utc_now) -> None:
        self.guard = guard
        self.signer = signer
        self.limits = limits or DeliveryLimits()
        self.clock = clock
        self._client = httpx.AsyncClient(
            verify=verify, trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(self.limits.read_s, connect=self.limits.connect_s),
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": "portrait-ha-webhooks/1", "content-type": "application/json"})

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, url: str, message_id: str, body: bytes) -> Attempt:
        """POST ``body`` to ``url`` once, signed as message ``message_id``; never raises for the receiver."""
        at, started = self.clock(), time.perf_counter()

        def attempt(outcome: Outcome, status: int | None, error: str | None, address: str | None = None) -> Attempt:
            return Attempt(at, outcome, status, error, round((time.perf_counter() - started) * 1000, 1), address)

        try:
            target = await self.guard.resolve(url)
        except TargetRefused as refused:
            return attempt("refused", None, str(refused))
        except ResolutionFailed as failed:
            return attempt("failed", None, str(failed))
        headers = {"host": target.host_header, **self.signer.headers(message_id, body, at)}
        error, address = "no address to connect to", None
        with anyio.move_on_after(self.limits.total_s) as scope:
            for address in target.addresses:
                try:
                    status = await self._post(target, address, headers, body)
                except (httpx.ConnectError, httpx.ConnectTimeout) as failed:
                    error = error_words(failed, self.limits)
                    continue  # nothing was sent: the next vetted address may answer
                except httpx.HTTPError as failed:
                    error = error_words(failed, self.limits)
                    break  # the request may have arrived: another address could deliver it twice
                if 200 <= status < 300:
                    return attempt("delivered", status, None, str(address))
                redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
                return attempt("failed", status, f"the receiver answered {status}{redirect}", str(address))
        if scope.cancelled_caught:
            error = f"no complete answer within {self.limits.total_s:g} s"
        logger.info("webhook %s to %s failed: %s", message_id, target.host, error)
        return attempt("failed", None, error, str(address) if address is not None else None)

    async def _post(self, target: VettedTarget, address: IPAddress, headers: dict[str, str], body: bytes) -> int:
        """The status of one POST to ``address``; reads at most ``max_response_bytes`` of the answer."""
        extensions = {} if target.literal or target.url.scheme != "https" else {"sni_hostname": target.host}
        request = self._client.build_request("POST", target.url_for(address), headers=headers, content=body,
                                             extensions=extensions)
        response = await self._client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= self.limits.max_response_bytes:
                    break
        except httpx.HTTPError:
            pass  # the status is the answer; a broken body after it does not change it
        finally:
            await response.aclose()
        return response.status_code
