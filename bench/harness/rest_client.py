"""``RestClient``: ``POST /generate`` (JSON) on a worker or on HAProxy's public frontend, checking what comes back."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx

from bench.harness.generation import DEFAULT_TIMEOUT, PNG_SIGNATURE, CallFailed, Job, Rejected, Reply, check_image


class RestClient:
    """``POST /generate`` on one base URL (a worker, or HAProxy's public frontend)."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``headers``: sent with every request (a worker's own port wants ``LaunchedCluster.internal_headers``);
        ``transport``: e.g. one with TCP keep-alive (``webui.keepalive``), as docs/api.md advises."""
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers, transport=transport)

    def generate(self, job: Job) -> Reply:
        """Run ``job``; a checked ``Reply`` or ``CallFailed``/``Rejected``."""
        return self.parse(self.post_json(job.rest_body()), job)

    def generate_unhashed(self, job: Job) -> Reply:
        """Run ``job``, checking its status, seed and PNG header (signature, size) but not its pixels:
        for load phases, where decoding every image would load the machine being measured."""
        response = self.post_json(job.rest_body())
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
            header = base64.b64decode(body["images"][0][:32])
            size = struct.unpack(">II", header[16:24])
            if header[:8] != PNG_SIGNATURE or size != (job.width, job.height) or body["seed"] != job.seed:
                raise CallFailed(f"not the asked image: PNG header {header[:24]!r}, seed {body['seed']}")
            return Reply(body["seed"], job.width, job.height, body["worker_id"],
                         job_id=response.headers.get("x-job-id"))
        except (ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
            raise CallFailed(f"malformed /generate answer: {exc!r}") from None

    def post_json(self, body: Any) -> httpx.Response:
        """POST any JSON body to ``/generate`` (transport errors become ``CallFailed``)."""
        return self._send(lambda: self.http.post("/generate", json=body))

    def post_raw(self, content: bytes, content_type: str = "application/json") -> httpx.Response:
        """POST raw bytes to ``/generate``, e.g. broken JSON."""
        return self._send(lambda: self.http.post("/generate", content=content, headers={"content-type": content_type}))

    @staticmethod
    def _send(call: Any) -> httpx.Response:
        try:
            return call()
        except httpx.HTTPError as exc:
            raise CallFailed(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def parse(response: httpx.Response, job: Job) -> Reply:
        """Check a ``/generate`` response against the job that was sent."""
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
            digest = check_image(base64.b64decode(body["images"][0]), job)
            if body["seed"] != job.seed:
                raise CallFailed(f"asked for seed {job.seed}, got {body['seed']}")
            return Reply(body["seed"], job.width, job.height, body["worker_id"], pixels_sha256=digest,
                         job_id=response.headers.get("x-job-id"))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CallFailed(f"malformed /generate answer: {exc!r}") from None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def error_from_response(response: httpx.Response) -> CallFailed:
    """``Rejected`` for a 4xx with the API's error body, ``CallFailed`` for anything else."""
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    text = detail or response.text[:300]
    if 400 <= response.status_code < 500 and detail:
        return Rejected(str(detail), response.status_code)
    return CallFailed(f"HTTP {response.status_code}: {text}")
