"""A generation as every client of the harness sees it: the request, the checked result, the errors.

Every client's ``generate`` takes a ``Job`` and returns a ``Reply`` after checking the image: it must
decode as a PNG of the requested size. Anything else raises ``CallFailed``; a request the
server refused as invalid raises ``Rejected`` with the server's message (what malformed
requests are expected to get).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Job:
    """One generation request, in the units every path understands."""

    prompt: str
    steps: int
    width: int
    height: int
    seed: int
    guidance: float = 1.0
    lora_scale: float = 1.0

    def rest_body(self) -> dict[str, Any]:
        """The JSON body of ``POST /generate``."""
        return asdict(self)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Reply:
    """A checked generation result."""

    seed: int
    width: int
    height: int
    worker_id: str
    web_node: str | None = None
    attempts: int = 1
    pixels_sha256: str = ""
    """Hash of the decoded RGB pixels: equal for equal images whatever the PNG encoder did."""
    progress_events: int = 0
    job_id: str | None = None
    """The recorded job that made the image (``X-Job-Id``, or the web front's ``info``), when there is one."""


class CallFailed(Exception):
    """A generation call did not produce a valid image; the message says why."""


class Rejected(CallFailed):
    """The server refused the request as invalid; the message is what it told the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def pixels_digest(image: Image.Image) -> str:
    """SHA-256 of an image's RGB pixels and size."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def check_image(data: bytes, job: Job) -> str:
    """Decode ``data`` as a PNG of the job's size; its pixel digest. Raises ``CallFailed``."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many types for broken data
        raise CallFailed(f"the image does not decode: {exc}") from None
    if image.format != "PNG" or image.size != (job.width, job.height):
        raise CallFailed(f"expected a {job.width}x{job.height} PNG, got {image.format} {image.size}")
    return pixels_digest(image)


def reply_from_gallery(gallery: Any, info: Any, job: Job, read_file: Any, progress_events: int = 0) -> Reply:
    """Check a (gallery, info) pair from the web front and build a ``Reply``."""
    if not gallery or not isinstance(info, dict):
        raise CallFailed(f"empty result: gallery={gallery!r} info={info!r}")
    first = gallery[0]
    ref = first.get("image", first) if isinstance(first, dict) else first[0]
    if isinstance(ref, dict):
        ref = ref.get("path") or ref.get("url")
    digest = check_image(read_file(ref), job)
    if info.get("seed") != job.seed:
        raise CallFailed(f"asked for seed {job.seed}, got {info.get('seed')}")
    return Reply(
        info["seed"], job.width, job.height, info.get("worker_id") or info["job_id"], info.get("web_node"),
        info.get("attempts", 1),
        pixels_sha256=digest, progress_events=progress_events, job_id=info.get("job_id"),
    )
