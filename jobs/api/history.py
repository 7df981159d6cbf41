"""A job's history routes: ``DELETE /v1/jobs/{id}`` (its owner removes it and its bytes everywhere; 410 after),
``GET /v1/jobs/{id}/thumbnails/{index}`` (a small WebP of a result, cached like the result itself) and
``GET /v1/jobs/{id}/input`` (a retouch's photo, which the job's JSON names by this URL)."""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Annotated

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Request, Response
from PIL import Image, UnidentifiedImageError

from jobs.api.auth import Who
from jobs.api.errors import RESPONSES
from jobs.api.routes import Api, existing_job, immutable_headers, not_modified
from jobs.api.views import PREFIX
from jobs.contract import SUCCEEDED
from jobs.errors import PhotoNotFound, ResultNotFound
from jobs.store import Job, delete_job, thumbnail
from webui.contract import PHOTO_FIELD
from webui.images import UploadError, decode_base64

logger = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, tags=["jobs"], responses={**RESPONSES, 409: RESPONSES[404]})


@router.delete("/{job_id}", status_code=204, response_class=Response)
async def delete(job_id: str, jobs: Api, who: Who) -> Response:
    """Delete your finished job: its record, results, thumbnails, events and webhook deliveries, at once. After
    that it answers 410 Gone; another login's job answers 404; a queued or running job 409 (cancel it first)."""
    await run_sync(delete_job, jobs.engine, job_id, who.owner)
    return Response(status_code=204)


@router.head("/{job_id}/thumbnails/{index}", include_in_schema=False)
@router.get("/{job_id}/thumbnails/{index}", response_class=Response,
            responses={200: {"content": {"image/webp": {}}, "description": "A thumbnail (at most 256 px)"}, 304: {}})
async def get_thumbnail(job: Annotated[Job, Depends(existing_job)], index: int, request: Request,
                        jobs: Api) -> Response:
    """A small WebP of result ``index`` (made once, kept beside it); ``ETag`` is its SHA-256, and it is cached
    until the job expires (it never changes)."""
    if job.status != SUCCEEDED:
        raise ResultNotFound(job.id, index, f"the job is {job.status}, and only a succeeded job has results")
    try:
        thumb = await run_sync(thumbnail, jobs.engine, job.id, index)
    except ValueError as error:
        raise ResultNotFound(job.id, index, str(error)) from None
    headers = immutable_headers(thumb.sha256, job.expires_at)
    if not_modified(request, headers):
        return Response(status_code=304, headers=headers)
    return Response(thumb.data, media_type=thumb.media_type, headers=headers)


def kept_photo(job: Job) -> bytes | None:
    """The photo ``job`` was given (its bytes), or None: no retouch, or its account's retention removed it."""
    encoded = job.input.get(PHOTO_FIELD)
    try:
        return decode_base64(encoded) if isinstance(encoded, str) and encoded else None
    except UploadError:  # the worker refused it: such a job never ran
        return None


def media_type(data: bytes) -> str:
    """An image's media type, from its header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.get_format_mimetype() or "application/octet-stream"
    except (UnidentifiedImageError, OSError):
        return "application/octet-stream"


@router.head("/{job_id}/input", include_in_schema=False)
@router.get("/{job_id}/input", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "The photo's bytes"}, 304: {}})
async def get_photo(job: Annotated[Job, Depends(existing_job)], request: Request) -> Response:
    """A retouch's photo, the very bytes the job was given (its JSON's ``input.init_image`` is this URL); ``ETag``
    is their SHA-256, cached until the job expires. 404 once the job keeps none (its account's retention)."""
    data = await run_sync(kept_photo, job)
    if data is None:
        raise PhotoNotFound(job.id)
    headers = immutable_headers(hashlib.sha256(data).hexdigest(), job.expires_at)
    if not_modified(request, headers):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=await run_sync(media_type, data), headers=headers)
