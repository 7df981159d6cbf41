"""Thumbnails: one small WebP per output result, made once (when the result is written, or on its first read
for a result older than store revision 0005) and kept beside it; history pages show these, never the results.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image as PillowImage
from PIL import UnidentifiedImageError
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from jobs.contract import OUTPUT
from jobs.errors import JobNotFound
from jobs.store.engine import read, write
from jobs.store.records import Image
from jobs.store.schema import results, thumbnails

logger = logging.getLogger(__name__)

SIDE = 256
"""A thumbnail's longer side, in pixels (a result is at most 2048)."""
QUALITY = 75
"""WebP quality: a 256 px portrait is then about 5 to 15 KB."""
MEDIA_TYPE = "image/webp"


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail's bytes and what they are; ``sha256`` is of these bytes (the ETag)."""

    sha256: str
    media_type: str
    width: int
    height: int
    data: bytes


def make(data: bytes) -> Thumbnail | None:
    """A thumbnail of the image ``data`` (None when the bytes are not an image Pillow reads)."""
    try:
        with PillowImage.open(io.BytesIO(data)) as image:
            image.thumbnail((SIDE, SIDE))
            small = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        logger.warning("no thumbnail: the result is not a readable image (%s)", error)
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=QUALITY, method=4)
    thumb = buffer.getvalue()
    return Thumbnail(hashlib.sha256(thumb).hexdigest(), MEDIA_TYPE, small.width, small.height, thumb)


def rows(job_id: str, images: Sequence[Image]) -> list[dict[str, Any]]:
    """The thumbnail rows of a job's results (made before the write transaction, so it holds no lock meanwhile)."""
    made = []
    for index, image in enumerate(images):
        if image.role == OUTPUT and (thumb := make(image.data)) is not None:
            made.append({"job_id": job_id, "index": index, **thumb.__dict__})
    return made


def thumbnail(engine: Engine, job_id: str, index: int) -> Thumbnail:
    """Result ``index``'s thumbnail; made and stored now if the result has none yet (``JobNotFound``: no such
    result)."""
    query = select(thumbnails).where(thumbnails.c.job_id == job_id, thumbnails.c.index == index)
    source = select(results.c.data).where(results.c.job_id == job_id, results.c.role == OUTPUT,
                                          results.c.index == index)
    with read(engine) as connection:
        row = connection.execute(query).one_or_none()
        data = None if row is not None else connection.execute(source).scalar_one_or_none()
    if row is not None:
        return _from_row(row._mapping)
    if data is None:
        raise JobNotFound(job_id)
    thumb = make(bytes(data))
    if thumb is None:
        raise ValueError(f"result {index} of job {job_id} is not an image")
    try:
        with write(engine) as connection:
            connection.execute(insert(thumbnails).values(job_id=job_id, index=index, **thumb.__dict__))
    except IntegrityError:
        pass  # made at the same time by another request (or the job was deleted): either way, this one is right
    return thumb


def _from_row(fields: Any) -> Thumbnail:
    return Thumbnail(fields["sha256"], fields["media_type"], fields["width"], fields["height"], bytes(fields["data"]))
