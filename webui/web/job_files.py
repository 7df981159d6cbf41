"""A job's result file asked of a web front that did not make it: answered from the job store (``--jobs-url``).

With jobs, a Gradio client's result is a file in the cache of the web front that followed its job
(``/gradio_api/file=<that front's cache>/…/portrait-<job id>-<n>.png``). A client whose stickiness cookie names
another web front (``gradio_client`` keeps its first cookie for ever) downloads it from that front as soon as it
is back in rotation: a front on another host has no such file, and Gradio answers 403. The file's name says which
job and which result it is, so any web front serves it from the jobs service (``/v1/jobs/{id}/results/{i}``), the
same bytes. Knowing the name is what knowing the path was: the job id (132 random bits) in it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from webui.web.handoff import FILE
from webui.web.jobs_client import JobsClient, JobsError

logger = logging.getLogger(__name__)

RESULT_NAME = re.compile(r"portrait-(?P<job>j_[A-Za-z0-9_-]{22})-(?P<number>[1-9][0-9]{0,2})\.png")
"""A job result's file name, as ``JobRunner.follow`` saves it (``result_name``): its job and its number (from 1)."""


def result_name(job_id: str, index: int) -> str:
    """The file name of the job's result ``index`` (from 0) in a web front's cache."""
    return f"portrait-{job_id}-{index + 1}.png"


def foreign_result(path: str, cache_dir: Path) -> tuple[str, int] | None:
    """(job id, result index) when ``path`` is a file download of a job result outside ``cache_dir``, else None."""
    if FILE not in path:
        return None
    wanted = Path(unquote(path.split(FILE, 1)[1]))
    match = RESULT_NAME.fullmatch(wanted.name)
    if match is None or wanted.resolve().is_relative_to(cache_dir):
        return None
    return match["job"], int(match["number"]) - 1


class JobResultFiles:
    """ASGI middleware: serves ``foreign_result`` downloads from the jobs service; the rest goes on to ``app``."""

    def __init__(self, app: ASGIApp, jobs: JobsClient, cache_dir: Path) -> None:
        self.app, self.jobs, self.cache_dir = app, jobs, cache_dir.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = foreign_result(scope["path"], self.cache_dir) if scope["type"] == "http" else None
        if wanted is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        job_id, index = wanted
        try:
            png = await self.jobs.result(job_id, index, Headers(scope=scope).get("authorization"))  # whose it is
        except JobsError as exc:
            logger.info("job %s: result %d asked of this web front, not served: %s", job_id, index, exc)
            missing = exc.status in (404, 410)  # unknown, or past its retention
            await self._send(404 if missing else 503, json.dumps({
                "error": "not found" if missing else "jobs service unavailable",
                "detail": f"No result {index + 1} of job {job_id}." if missing else str(exc), "fields": []}).encode(),
                b"application/json", scope["method"], send)
            return
        logger.info("job %s: result %d served from the job store (made by another web front)", job_id, index)
        await self._send(200, png, b"image/png", scope["method"], send)

    @staticmethod
    async def _send(status: int, body: bytes, kind: bytes, method: str, send: Send) -> None:
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"private, no-store" if status != 200 else b"private, max-age=3600")]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
