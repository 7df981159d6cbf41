"""The web front's client of the jobs service (``/v1/jobs``, see ``docs/jobs.md``): submit, follow, read, cancel.

``submit`` sends an ``Idempotency-Key`` and retries a submission whose answer was lost (connection cut, 502,
503, 504) with the same key, so a retry never makes a second job. ``events`` follows a job's Server-Sent
Events and, when the stream is cut before the job's end (the jobs service restarted, a proxy timed out),
reconnects with ``Last-Event-ID``: nothing is missed and nothing is seen twice. Failures become
``JobsError``, whose message is meant for the user (a ``WorkerError``, as the worker client's are).

It sends the cluster secret and uses the same TLS options as ``WorkerClient``: the jobs service sits behind
the same internal entry of the balancer. One client per web app; close it with ``aclose()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from webui.contract import RETRYABLE_STATUSES
from webui.queue_client import queue_http
from webui.web.jobs_wire import (
    ACCOUNT,
    IDEMPOTENCY_KEY,
    LAST_EVENT_ID,
    PREFIX,
    SESSIONS,
    AccountKey,
    AccountPage,
    JobEvent,
    JobListing,
    JobSnapshot,
    ShareLinks,
    SignedIn,
    job_path,
)
from webui.web.worker_errors import WorkerError

logger = logging.getLogger(__name__)


class JobsError(WorkerError):
    """The jobs service refused or could not be reached; ``str(error)`` is a sentence for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retry(Exception):
    """One request failed in a way a repeat may fix."""


def _problem(response: httpx.Response, job_id: str | None = None) -> JobsError | _Retry:
    """What an error answer of the jobs service means: ``_Retry`` for a passing one, else a ``JobsError``."""
    if response.status_code in RETRYABLE_STATUSES:
        return _Retry(f"HTTP {response.status_code} from the jobs service")
    if response.status_code == 404 and job_id:
        return JobsError(f"The job {job_id} is not known to the jobs service.", 404)
    if response.status_code == 410 and job_id:
        return JobsError(f"The job {job_id} has expired or was deleted: its results are gone.", 410)
    try:
        detail = response.json().get("detail") or response.reason_phrase
    except (ValueError, AttributeError):
        detail = response.reason_phrase or f"HTTP {response.status_code}"
    return JobsError(str(detail), response.status_code)


def parse_sse(lines: Iterable[str]) -> list[JobEvent]:
    """The complete events in ``lines`` (one stream's lines so far, blank line ends an event; ``:`` comments)."""
    events, name, event_id, data = [], "message", None, []
    for line in lines:
        if not line:
            if data:
                events.append(JobEvent(name, event_id, json.loads("\n".join(data))))
            name, event_id, data = "message", None, []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "id":
            event_id = int(value) if value.isdigit() else None
        elif field == "data":
            data.append(value)
    return events


def as_user(login: str | None) -> dict[str, str]:
    """The header that makes a request act for the page's user: the ``Authorization`` they logged in with."""
    return {"Authorization": login} if login else {}


class JobsClient:
    """Runs generations as jobs of the jobs service at ``base_url``."""

    def __init__(self, base_url: str, timeout: float = 30.0, connect_timeout: float = 5.0, attempts: int = 5,
                 retry_delay: float = 0.5, reconnect_for: float = 60.0, ca_file: Path | None = None,
                 cert_file: Path | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.reconnect_for = reconnect_for
        """Seconds a job's event stream may stay cut (reconnecting) before following it fails."""
        # keep-alive: a stream through a cut-off balancer ends in seconds
        self._http = queue_http(self.base_url, timeout, connect_timeout, ca_file, cert_file, transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, job_id: str | None = None, **kwargs: Any) -> httpx.Response:
        """One request, repeated (same headers, same body) while it fails in a passing way."""
        cause = "no attempt was made"
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
                if response.is_success:
                    return response
                raise _problem(response, job_id)
            except _Retry as exc:
                cause = str(exc)
            except httpx.TransportError as exc:
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.attempts:
                logger.warning("%s %s failed (%s); trying again", method, path, cause)
                await asyncio.sleep(self.retry_delay)
        raise JobsError(f"The jobs service could not be reached after {self.attempts} attempts: {cause}")

    async def submit(self, fields: dict[str, Any], key: str | None = None, login: str | None = None) -> JobSnapshot:
        """Record a job (the worker's fields; None values left out); its id and status. The same ``key`` (default:
        a fresh one, kept across this call's retries) with the same fields gives the same job. ``login``: the
        page user's ``Authorization``, which makes the job theirs."""
        body = {name: value for name, value in fields.items() if value is not None}
        headers = {IDEMPOTENCY_KEY: key or uuid.uuid4().hex, **as_user(login)}
        response = await self._request("POST", PREFIX, json=body, headers=headers)
        return JobSnapshot.model_validate(response.json())

    async def listing(self, query: dict[str, str], login: str | None = None) -> JobListing:
        """One page of ``login``'s jobs, newest first (``query``: ``limit``, ``cursor`` and the filters)."""
        response = await self._request("GET", PREFIX, params=query, headers=as_user(login))
        return JobListing.model_validate(response.json())

    async def delete(self, job_id: str, login: str | None = None) -> None:
        """Delete ``login``'s finished job and its results (an answer lost and retried finds it gone: done)."""
        try:
            await self._request("DELETE", job_path(job_id), job_id, headers=as_user(login))
        except JobsError as exc:
            if exc.status != 410:
                raise

    async def get(self, job_id: str, login: str | None = None) -> JobSnapshot:
        response = await self._request("GET", job_path(job_id), job_id, headers=as_user(login))
        return JobSnapshot.model_validate(response.json())

    async def cancel(self, job_id: str, login: str | None = None) -> JobSnapshot:
        """Ask the jobs service to cancel the job (a finished one stays as it is); the job now."""
        response = await self._request("POST", job_path(job_id, "cancel"), job_id, headers=as_user(login))
        return JobSnapshot.model_validate(response.json())

    async def share(self, job_id: str, login: str | None = None) -> ShareLinks:
        """Links to the job's results that work without the site's login (paths on the site), until they expire."""
        response = await self._request("POST", job_path(job_id, "share"), job_id, headers=as_user(login))
        return ShareLinks.model_validate(response.json())

    async def result(self, job_id: str, index: int, login: str | None = None) -> bytes:
        """The bytes of the job's result ``index`` (a PNG)."""
        return (await self._request("GET", job_path(job_id, "results", index), job_id, headers=as_user(login))).content

    async def photo(self, job_id: str, login: str | None = None) -> bytes:
        """The photo a retouch job was given (``JobsError`` 404 once it keeps none)."""
        return (await self._request("GET", job_path(job_id, "input"), job_id, headers=as_user(login))).content

    async def sign_in(self, account: str, user: str, password: str) -> SignedIn:
        """A member's session (``JobsError`` 401 for a wrong name or password, 429 while the name is locked)."""
        response = await self._request("POST", SESSIONS, json={"account": account, "user": user,
                                                               "password": password})
        return SignedIn.model_validate(response.json())

    async def session(self, login: str) -> SignedIn:
        """Whose session ``login`` (``Authorization: Session <token>``) is; ``JobsError`` 401 once it ended."""
        return SignedIn.model_validate((await self._request("GET", SESSIONS + "/current",
                                                            headers=as_user(login))).json())

    async def account(self, login: str) -> AccountPage:
        """The account of the signed-in admin ``login``: its members and keys (``JobsError`` 403 for a member)."""
        return AccountPage.model_validate((await self._request("GET", ACCOUNT, headers=as_user(login))).json())

    async def put_member(self, login: str, user: str, role: str, password: str | None = None) -> None:
        """Add ``user`` to the admin's account with ``role`` or change their role (and password, when given)."""
        body = {"role": role} | ({"password": password} if password else {})
        await self._request("PUT", f"{ACCOUNT}/members/{quote(user, safe='')}", json=body, headers=as_user(login))

    async def remove_member(self, login: str, user: str) -> None:
        await self._request("DELETE", f"{ACCOUNT}/members/{quote(user, safe='')}", headers=as_user(login))

    async def create_key(self, login: str, scopes: list[str], label: str | None) -> AccountKey:
        """A new API key of the admin's account; the answer carries the key itself, this once."""
        response = await self._request("POST", f"{ACCOUNT}/keys", json={"scopes": scopes, "label": label},
                                       headers=as_user(login))
        return AccountKey.model_validate(response.json())

    async def revoke_key(self, login: str, key_id: str) -> AccountKey:
        response = await self._request("POST", f"{ACCOUNT}/keys/{quote(key_id, safe='')}/revoke",
                                       headers=as_user(login))
        return AccountKey.model_validate(response.json())

    async def events(self, job_id: str, after: int = 0, login: str | None = None) -> AsyncIterator[JobEvent]:
        """The job's events after number ``after`` until its terminal event, reconnecting a cut stream."""
        cut_since: float | None = None
        while True:
            try:
                async for event in self._stream(job_id, after, login):
                    cut_since = None
                    if event.id is not None:
                        after = event.id
                    yield event
                    if event.terminal:
                        return
                cause = "the stream ended before the job did"
            except (_Retry, httpx.TransportError) as exc:
                cause = str(exc) or type(exc).__name__
            cut_since = cut_since or time.monotonic()
            if time.monotonic() - cut_since > self.reconnect_for:
                raise JobsError(f"Lost the progress of job {job_id} for {self.reconnect_for:g} s: {cause}")
            logger.info("job %s: event stream cut after event %d (%s); reconnecting", job_id, after, cause)
            await asyncio.sleep(self.retry_delay)

    async def _stream(self, job_id: str, after: int, login: str | None) -> AsyncIterator[JobEvent]:
        headers = {LAST_EVENT_ID: str(after), **as_user(login)} if after else as_user(login)
        async with self._http.stream("GET", job_path(job_id, "events"), headers=headers) as response:
            if not response.is_success:
                await response.aread()
                raise _problem(response, job_id)
            lines: list[str] = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line:
                    continue
                try:
                    events = parse_sse(lines)
                except (ValueError, ValidationError) as exc:
                    raise JobsError(f"The jobs service sent an unreadable event for job {job_id}.") from exc
                lines.clear()
                for event in events:
                    yield event
