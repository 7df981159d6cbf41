"""Share links: ``POST /v1/jobs/{id}/share`` signs one link per result; ``GET /v1/share/{token}`` serves it.

A link lets someone without the site's login see one result until it expires (at most ``MAX_EXPIRES_IN``, and never
past the job's own retention). Stateless: the token carries the job, the result and the expiry, signed with the
deployment's share key (``share_tokens``), so any balancer host with the same key serves it. The balancer passes
only ``GET``/``HEAD`` of ``/v1/share/`` without the login; everything under ``/v1/jobs`` stays behind it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, Field

from jobs.api.errors import RESPONSES
from jobs.api.routes import Api, JobsApi, existing_job, result_response
from jobs.api.share_tokens import ShareSigner
from jobs.contract import SHARE_PREFIX, SUCCEEDED
from jobs.errors import NotShareable
from jobs.store import Job, get, stored_results

logger = logging.getLogger(__name__)

DEFAULT_EXPIRES_IN = int(timedelta(days=7).total_seconds())
MAX_EXPIRES_IN = int(timedelta(days=30).total_seconds())
ERRORS = {**RESPONSES, **{status: RESPONSES[404] for status in (403, 409)}}


class ShareRequest(BaseModel):
    """``POST /v1/jobs/{id}/share``: how long the links last."""

    expires_in: int = Field(DEFAULT_EXPIRES_IN, ge=1, le=MAX_EXPIRES_IN, description="Seconds the links work "
                            "(at most 30 days; never past the job's own expiry).")


class ShareLinks(BaseModel):
    """One link per result (paths on this service), and when they stop working."""

    job_id: str
    expires_at: datetime
    urls: list[str]


def signer(jobs: JobsApi) -> ShareSigner:
    """The service's signer (``create_app`` adds these routes only where there is one)."""
    assert jobs.shares is not None
    return jobs.shares


router = APIRouter(tags=["share links"], responses=ERRORS)


@router.post("/v1/jobs/{job_id}/share", response_model=ShareLinks)
async def share_job(job: Annotated[Job, Depends(existing_job)], jobs: Api,
                    asked: Annotated[ShareRequest | None, Body()] = None) -> ShareLinks:
    """Links to the job's results that work without the site's login until they expire (409 until it succeeded)."""
    if job.status != SUCCEEDED:
        raise NotShareable(job.id, job.status)
    seconds = (asked or ShareRequest()).expires_in
    expires_at = min(datetime.now(UTC) + timedelta(seconds=seconds), job.expires_at).replace(microsecond=0)
    described = await run_sync(stored_results, jobs.engine, job.id)
    links = signer(jobs)
    urls = [f"{SHARE_PREFIX}/{links.token(job.id, index, expires_at)}" for index in range(len(described))]
    logger.info("job %s: %d share links until %s", job.id, len(urls), expires_at.isoformat())
    return ShareLinks(job_id=job.id, expires_at=expires_at, urls=urls)


@router.head(SHARE_PREFIX + "/{token}", include_in_schema=False)
@router.get(SHARE_PREFIX + "/{token}", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "The image's bytes"}, 304: {}})
async def shared_result(token: str, request: Request, jobs: Api) -> Response:
    """The shared result's bytes, without login, until the link expires (then 410; 403 for a forged link)."""
    shared = signer(jobs).check(token)
    job = await run_sync(get, jobs.engine, shared.job_id)
    return await result_response(jobs, job, shared.index, request, min(shared.expires_at, job.expires_at))
