"""A REST client of the durable jobs API: ``POST /v1/jobs`` with an ``Idempotency-Key``, then ``GET /v1/jobs/{id}``
until the job ends, then its image (``/v1/jobs/{id}/results/0``), as the other clients' checked ``Reply``.

While the path is down for a moment (HAProxy or the jobs service restarting) following the job waits it out, as a
client that has a job id would; only the submission and the download can fail the call (``CallFailed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.harness.clients import CallFailed, Job, Reply, check_image, error_from_response

TERMINAL = ("succeeded", "failed", "canceled")


class JobApiClient:
    """Submits and follows jobs on one base URL (the public frontend, or the service with ``headers``)."""

    def __init__(self, base_url: str, timeout: float = 30.0, follow_for: float = 300.0,
                 headers: dict[str, str] | None = None, on_accepted: Callable[[str], None] | None = None,
                 fields: dict[str, Any] | None = None) -> None:
        """``follow_for``: seconds a job may take from submission to its end; ``on_accepted``: told every job id
        the service accepted (before the call knows how the job ends); ``fields``: added to every submission
        (e.g. ``webhook``)."""
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)
        self.follow_for = follow_for
        self.on_accepted = on_accepted
        self.fields = fields or {}

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
        """Poll the job until it is terminal; its JSON. Transport errors and 5xx answers are waited out."""
        deadline = time.monotonic() + self.follow_for
        while time.monotonic() < deadline:
            try:
                answer = self.http.get(f"/v1/jobs/{job_id}")
                if answer.status_code == 200 and answer.json()["status"] in TERMINAL:
                    return answer.json()
                if 400 <= answer.status_code < 500:
                    raise error_from_response(answer)
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise CallFailed(f"job {job_id} did not end within {self.follow_for:g} s")

    @staticmethod
    def _send(call: Callable[[], httpx.Response]) -> httpx.Response:
        try:
            return call()
        except httpx.HTTPError as exc:
            raise CallFailed(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
