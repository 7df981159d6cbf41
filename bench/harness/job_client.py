"""A REST client of the durable jobs API: ``POST /v1/jobs`` with an ``Idempotency-Key``, then the job's event stream
(``GET /v1/jobs/{id}/events``) until the job ends, then its image (``/v1/jobs/{id}/results/0``), as the other clients'
checked ``Reply``.

It follows docs/api.md's advice for clients that never wait in vain: every read has a timeout of a few seconds
(``READ_TIMEOUT_S``, above the stream's heartbeat), its connections have TCP keep-alive (``webui.keepalive``), a
submission or download whose answer was lost is sent again (the same key: the same job) after ``RESEND_AFTER_S``,
and a stream that is cut or goes quiet is re-attached with ``Last-Event-ID``. While the path is down for a moment
(a balancer cut off, HAProxy or the jobs service restarting) following the job waits it out, as a client that has
a job id would; ``resends`` and ``reattached`` count what that cost, ``longest_silence_s`` the longest time a read
waited for a byte.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.harness.generation import CallFailed, Job, Reply, check_image
from bench.harness.rest_client import error_from_response
from webui import keepalive
from webui.web.jobs_client import parse_sse
from webui.web.jobs_wire import LAST_EVENT_ID

TERMINAL = ("succeeded", "failed", "canceled")
READ_TIMEOUT_S = 5.0
"""Seconds a read may wait for a byte: the event stream's heartbeat (``jobs.api.sse.HEARTBEAT_S``) comes well within."""
RESEND_AFTER_S = (0.5, 1.0, 2.0, 2.0, 2.0, 2.0)
"""Pauses before each resend of a request whose answer was lost (connection failed, reset, timed out, 502/503/504)."""
PASSING = (502, 503, 504)


class JobApiClient:
    """Submits and follows jobs on one base URL (the public frontend, or the service with ``headers``)."""

    def __init__(self, base_url: str, timeout: float = READ_TIMEOUT_S, follow_for: float = 300.0,
                 headers: dict[str, str] | None = None, on_accepted: Callable[[str], None] | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        """``timeout``: seconds a read may wait; ``follow_for``: seconds a job may take from submission to its end;
        ``on_accepted``: told every job id the service accepted (before the call knows how the job ends);
        ``fields``: added to every submission (e.g. ``webhook``)."""
        transport = httpx.HTTPTransport(socket_options=keepalive.socket_options())
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout, connect=2.0),
                                 headers=headers, transport=transport)
        self.follow_for = follow_for
        self.on_accepted = on_accepted
        self.fields = fields or {}
        self.resends = 0
        """Requests sent again because their answer was lost."""
        self.reattached = 0
        """Event streams re-attached (``Last-Event-ID``) before their job's end."""
        self.longest_silence_s = 0.0
        self._lock = threading.Lock()

    def generate(self, job: Job, key: str) -> Reply:
        """Submit ``job`` under ``key``, follow it to its end, fetch and check its image."""
        job_id = self.submit(job, key)
        view = self.follow(job_id)
        if view["status"] != "succeeded":
            raise CallFailed(f"job {job_id} ended {view['status']}: {view.get('error')}")
        image = self._send(lambda: self.http.get(f"/v1/jobs/{job_id}/results/0"))
        if image.status_code != 200:
            raise error_from_response(image)
        return Reply(job.seed, job.width, job.height, (view.get("generation") or {}).get("worker_id", ""),
                     pixels_sha256=check_image(image.content, job), attempts=view["attempts"], job_id=job_id)

    def submit(self, job: Job, key: str) -> str:
        """``POST /v1/jobs``; the job's id (the earlier job's for a key already used)."""
        body = {**job.rest_body(), **self.fields}
        answer = self._send(lambda: self.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key}))
        if answer.status_code not in (200, 201, 202):
            raise error_from_response(answer)
        job_id = str(answer.json()["id"])
        if self.on_accepted is not None:
            self.on_accepted(job_id)
        return job_id

    def follow(self, job_id: str) -> dict[str, Any]:
        """Follow the job's events until its terminal one (re-attaching a cut or quiet stream); its JSON."""
        deadline, after = time.monotonic() + self.follow_for, 0
        while time.monotonic() < deadline:
            try:
                view, after = self._stream(job_id, after, deadline)
            except httpx.HTTPError:
                view = None
            if view is not None:
                return view
            if time.monotonic() >= deadline:
                break  # the job outlived the wait: no re-attach
            self._count("reattached")
            time.sleep(RESEND_AFTER_S[0])
        raise CallFailed(f"job {job_id} did not end within {self.follow_for:g} s")

    def _stream(self, job_id: str, after: int, deadline: float) -> tuple[dict[str, Any] | None, int]:
        """One event stream after event ``after``: the job's JSON once it ended (None: cut before, or still running
        at ``deadline``, a monotonic time: a live stream of a job that never ends must not hold its caller), the
        last id."""
        headers = {LAST_EVENT_ID: str(after)} if after else {}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as answer:
            if 400 <= answer.status_code < 500:
                answer.read()
                raise error_from_response(answer)
            if answer.status_code != 200:
                return None, after
            lines: list[str] = []
            heard = time.monotonic()
            try:
                for line in answer.iter_lines():
                    self._silence(time.monotonic() - heard)
                    heard = time.monotonic()
                    lines.append(line)
                    if time.monotonic() > deadline:
                        break
                    if line:
                        continue
                    for event in parse_sse(lines):
                        after = event.id if event.id is not None else after
                        if event.terminal:
                            return event.data, after
                    lines.clear()
            finally:
                self._silence(time.monotonic() - heard)
        return None, after

    def _send(self, call: Callable[[], httpx.Response]) -> httpx.Response:
        """``call`` until its answer is not lost (resent after ``RESEND_AFTER_S``); ``CallFailed`` after the last."""
        cause = ""
        for pause in (*RESEND_AFTER_S, None):
            try:
                answer = call()
                if answer.status_code not in PASSING:
                    return answer
                cause = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                cause = f"{type(exc).__name__}: {exc}"
            if pause is None:
                break
            self._count("resends")
            time.sleep(pause)
        raise CallFailed(cause)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _silence(self, seconds: float) -> None:
        with self._lock:
            self.longest_silence_s = max(self.longest_silence_s, seconds)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
